"""Adding a model is one YAML plus its data: a throwaway model from a temporary config directory
is seeded, pinned, given its DAG file and run through every job on tiny data, with no code edit.

Its data is not intent's: other column names (``utterance``, ``topic``), other label names,
its own labels file, its own sample CSVs. The jobs run as the DAG's tasks run them: specs
from the config, the local runner, the job environment.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from retrain.config import load_config
from retrain.gate import evaluate_gate
from retrain.jobs import RunContext, job_spec
from retrain.paths import PROJECT_ROOT, job_python
from retrain.runner import local_job, run_job
from retrain.snapshot import snapshot_raw
from retrain.store import LocalStore

pytestmark = pytest.mark.skipif(not job_python().exists(), reason=f"job environment missing at {job_python()}")

TOPICS = {
    "card_arrival": "delivery",
    "exchange_rate": "fx",
    "lost_or_stolen_card": "security",
    "top_up_failed": "payments",
}
CONFIG = """\
name: ticket
task: text_classification
description: Support-ticket topics (a throwaway model added by a test).
schedule: {{cadence: weekly, start_date: 2026-09-07}}
dag: {{owner: test-team, retries: 0}}
data:
  text_column: utterance
  label_column: topic
  labels_file: {labels}
  min_rows: 10
  golden_version: v1
training:
  base_model: all-MiniLM-L6-v2
  hyperparameters: {{seed: 3, epochs: 8, batch_size: 16, head_learning_rate: 0.05, threads: 2}}
evaluation: {{batch_size: 64, latency: {{requests: 10, warmup: 2}}}}
gate: {{min_total_examples: 20, floors: {{macro_f1: 0.5}}}}
approval: {{assigned_users: [carol]}}
sample_data: {{raw: {raw}, golden: {golden}, partitions: 2}}
"""


def write_sample(path: Path, source: Path, per_topic: int, skip: int = 0) -> None:
    taken: dict[str, int] = {}
    with open(source, newline="") as handle, open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["utterance", "topic"])
        for row in csv.DictReader(handle):
            topic = TOPICS.get(row["category"])
            if topic and skip <= taken.get(topic, 0) < skip + per_topic:
                writer.writerow([row["text"], topic])
            if topic:
                taken[topic] = taken.get(topic, 0) + 1


@pytest.fixture(scope="module")
def new_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("new_model")
    config_dir, store_root, dags_dir = root / "config", root / "store", root / "dags"
    config_dir.mkdir()
    (root / "topics.json").write_text(json.dumps(sorted(TOPICS.values())))
    write_sample(root / "raw.csv", PROJECT_ROOT / "data/banking77/train.csv", 25)
    write_sample(root / "golden.csv", PROJECT_ROOT / "data/banking77/test.csv", 8)
    (config_dir / "ticket.yaml").write_text(
        CONFIG.format(labels=root / "topics.json", raw=root / "raw.csv", golden=root / "golden.csv")
    )
    env = {
        "RETRAIN_CONFIG_DIR": str(config_dir),
        "RETRAIN_HOME": str(store_root),
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
    }
    for command in (
        ["-m", "retrain_tools.seed", "--model", "ticket"],
        ["-m", "retrain_tools.cli", "golden", "pin", "ticket"],
        ["-m", "retrain_tools.cli", "dags", "sync", "--dags-dir", str(dags_dir)],
    ):
        done = subprocess.run(
            [sys.executable, *command],
            env={**env, "PYTHONPATH": f"{PROJECT_ROOT / 'plugins'}:{PROJECT_ROOT / 'tools'}"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return {
        "config": load_config(config_dir / "ticket.yaml"),
        "store": LocalStore(store_root),
        "dags": dags_dir,
        "env": env,
    }


def test_seed_pin_and_dag_file_come_from_the_yaml(new_model):
    config, store = new_model["config"], new_model["store"]
    assert config.data.golden_sha256 and len(config.data.golden_sha256) == 64  # pinned by the CLI, not by hand
    assert len(list(store.path("raw/ticket").iterdir())) == 2
    code = (
        "from airflow.dag_processing.dagbag import DagBag; "
        f"b = DagBag({str(new_model['dags'])!r}); print(sorted(b.dags), b.import_errors)"
    )
    parsed = subprocess.run(
        [sys.executable, "-c", code],
        env={**__import__("os").environ, **new_model["env"]},
        capture_output=True,
        text=True,
        check=True,
    )
    assert parsed.stdout.strip().splitlines()[-1] == "['retrain_ticket', 'rollback_ticket'] {}"


def test_every_job_runs_for_the_new_model(new_model, monkeypatch):
    config, store = new_model["config"], new_model["store"]
    monkeypatch.setenv("RETRAIN_HOME", str(store.root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store.root / 'mlflow.db'}")
    # the two weekly partitions seed placed (ending with the latest complete week when it ran): the interval spans both
    days = sorted(date.fromisoformat(p.name.removeprefix("dt=")) for p in store.path("raw/ticket").iterdir())
    start = datetime(days[0].year, days[0].month, days[0].day, tzinfo=UTC)
    end = datetime(days[-1].year, days[-1].month, days[-1].day, tzinfo=UTC) + timedelta(days=7)
    manifest = snapshot_raw(store, config.name, start, end)
    path = store.write_json("runs/ticket/manual/raw_manifest.json", manifest)
    upstream = {"snapshot_raw": {"manifest_path": str(path)}}
    for job in ("validate_raw", "build_dataset", "train_model", "evaluate_model"):
        ctx = RunContext(
            dag_id="retrain_ticket", run_id="manual", interval_start=start, interval_end=end, upstream=upstream
        )
        upstream[job] = run_job(local_job(job_spec(job, config, ctx, store), store))
    built, metrics = upstream["build_dataset"], upstream["evaluate_model"]
    assert built["counts"]["train"] + built["counts"]["validation"] > 50
    assert (
        set(metrics["labels"]) == set(TOPICS.values()) and metrics["golden_content_sha256"] == config.data.golden_sha256
    )
    gate = evaluate_gate(config.gate, metrics)
    assert gate["decision"] == "pass", gate["failed"]  # four distinct topics: the tiny model clears a 0.5 floor
