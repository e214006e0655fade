"""A real Airflow (``airflow standalone``: scheduler, API server, DAG processor, triggerer)
over tiny data, for the integration tier. Nothing here is mocked.

The project's model server runs beside it (``model_server``): every promotion moves its traffic, and the deployment
stage (shadow, canary) runs on it. Tiny models share the data: ``intent`` (the shipped policy), ``intent_faulty``
(like ``intent``, but every canary request fails: its second run is rolled back automatically), ``intent_backfill``,
whose gate
floor no model can reach, so its runs show a gate rejection (two past weekly partitions and the latest, for a
backfill), and ``intent_race`` (like
``intent``) for two overlapping runs, and ``intent_timeout``, whose approval times out after 18 s. Their DAG files are
generated into the stack's own DAGs folder by the project's ``dags sync``, as a user adding
a model would; ``broken.yaml`` is a config with a bad field, which must show up as an
import error while the others load. ``OTHER_MODELS`` are shipped models other than intent,
their configs as shipped but for tiny data (one raw partition of their own cadence's latest
complete interval), a smaller golden set and fewer epochs. The runs the tests wait for start
together with the stack (``start_runs``); intent's chain of runs goes first (``CHAIN_FIRST``).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from airflowstack import (
    PROJECT_ROOT,
    TinyProject,
    model_server,
    registry_status_reader,
    standalone_airflow,
    tiny_retrieval_data,
    tiny_shipped_config,
    user_factory,
    write_csv,
)
from retrain.config import load_config
from retrain.intervals import latest_complete_interval

MODELS = ("intent", "intent_backfill", "intent_race", "intent_timeout", "intent_faulty")
UNREACHABLE_FLOOR = ("intent_backfill",)
BACKFILL_WEEKS = (2, 1)
"""The weeks back from the latest that intent_backfill's backfill asks for; the latest week joins it, so three runs."""
OTHER_MODELS = ("embedding_adapter", "reranker", "sentiment")
"""Shipped models as shipped but for tiny data, a smaller gate sample and fewer epochs: two of the other task types, and
sentiment, a text_classification model like intent with a cadence of its own (weekly from Tuesday) and an escalation
metric in its gate. llm_lora (causal_lm_lora, quarterly) runs under no scheduler in the tests:
tests/jobs/test_llm_lora.py
runs its jobs on tiny data, tests/dags checks its DAG, bench/model_demos.py runs its demo under ``airflow
standalone``."""
LATENCY_OUT_OF_THE_WAY = (
    ("  latency_p50_ms_max: 50\n", "  latency_p50_ms_max: 5000\n"),
    ("  latency_p99_ms_max: 200\n", "  latency_p99_ms_max: 20000\n"),
)
"""The tier runs several models' jobs at once on a loaded 2-core machine: latency is noise there (the gate's own tests
cover
the latency criteria, which are still scored and listed)."""
TINY_EDITS = {
    "embedding_adapter": (
        ("min_rows: 20", "min_rows: 10"),
        ("epochs: 10 ", "epochs: 4 "),
        ("min_total_examples: 500", "min_total_examples: 40"),
        ("    recall_at_10: 0.95\n", "    recall_at_10: 0.5\n"),
        ("    mrr_at_10: 0.85\n", "    mrr_at_10: 0.3\n"),
        ("    ndcg_at_10: 0.88\n", "    ndcg_at_10: 0.3\n"),
        ("      ndcg_at_10: 0.02\n", "      ndcg_at_10: -1.0\n"),
        ("      recall_at_10: 0.0\n", "      recall_at_10: -1.0\n"),
        *LATENCY_OUT_OF_THE_WAY,
    ),
    "reranker": (
        ("min_rows: 20", "min_rows: 10"),
        ("max_queries: 256 ", "max_queries: 64 "),
        ("min_total_examples: 200", "min_total_examples: 20"),
        ("    mrr_at_10: 0.75\n", "    mrr_at_10: 0.3\n"),
        ("    ndcg_at_10: 0.80\n", "    ndcg_at_10: 0.3\n"),
        ("      ndcg_at_10: 0.0\n", "      ndcg_at_10: -1.0\n"),
        ("      mrr_at_10: 0.0\n", "      mrr_at_10: -1.0\n"),
        ("  latency_p50_ms_max: 400\n", "  latency_p50_ms_max: 5000\n"),
        ("  latency_p99_ms_max: 1000 ", "  latency_p99_ms_max: 20000 "),
    ),
    "sentiment": (
        ("min_rows: 20", "min_rows: 10"),
        ("min_total_examples: 500", "min_total_examples: 20"),
        ("min_class_support: 100", "min_class_support: 5"),
        ("    macro_f1: 0.88\n", "    macro_f1: 0.5\n"),
        ("    accuracy: 0.88\n", "    accuracy: 0.5\n"),
        ("per_class_floor: 0.85", "per_class_floor: 0.0"),
        ("    max_rate: 0.12 ", "    max_rate: 0.5 "),
        *LATENCY_OUT_OF_THE_WAY,
    ),
}
GOLDEN_SOURCE = {"embedding_adapter": "retrieval", "reranker": "reranking"}
"""Which data/<dir> a retrieval-shaped model's tiny golden set is cut from (the reranker's carries its fixed candidate
lists)."""


def tiny_sentiment_data(root: Path, per_label: int = 60, golden_per_label: int = 15) -> dict[str, object]:
    """The first ``per_label`` rows of each sentiment of data/sentiment/train.csv as raw rows (text, sentiment), and
    the first
    ``golden_per_label`` of each of its golden.csv as a tiny golden CSV."""

    def first(path: Path, n: int) -> list[tuple[str, str]]:
        taken: dict[str, int] = {}
        rows = []
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                if taken.get(row["sentiment"], 0) < n:
                    taken[row["sentiment"]] = taken.get(row["sentiment"], 0) + 1
                    rows.append((row["text"], row["sentiment"]))
        return rows

    golden = root / "sentiment-golden.csv"
    write_csv(
        golden, first(PROJECT_ROOT / "data" / "sentiment" / "golden.csv", golden_per_label), ("text", "sentiment")
    )
    return {"rows": first(PROJECT_ROOT / "data" / "sentiment" / "train.csv", per_label), "golden": golden}


STARTED_WITH_THE_STACK = ("intent", "intent_timeout", "intent_race", "intent_faulty", *OTHER_MODELS)
"""DAGs unpaused as soon as the stack is up: the scheduler starts their runs of the latest complete interval side by
side
(different DAGs; each DAG's job tasks still run one at a time), beside the race's backfill and the two-week backfill.
The tests then drive and check those runs: intent's chain first (CHAIN_FIRST), its tasks queued ahead of the others'
(CHAIN_PRIORITY), while the other runs' jobs use the time its tasks spend waiting on the scheduler, the triggerer and
the approvals; the tests that only check those runs come last."""
PARALLELISM = 3
"""Task instances running at once (AIRFLOW__CORE__PARALLELISM): enough to fill the waits on 2 cores, few enough that
several models' jobs (a Spark JVM, torch) never crowd the machine, and intent's task gets a good share of it."""
BEFORE_THE_STACK = ("test_kill_local.py",)
"""Modules that start (and kill) an Airflow of their own: first, before the shared stack starts, so that two Airflows
never share the machine."""
CHAIN_FIRST = ("test_pipeline_local.py", "test_promotion_local.py")
CHAIN_PRIORITY = """\
def task_policy(task):
    # The integration stack's only policy (tests/integration/conftest.py): intent's tasks, whose runs the tests start
    # one
    # after another, queue ahead of the runs started beside them (the scheduler orders by priority weight, then by
    # logical date, which would put intent's latest week last).
    if task.dag_id in ("retrain_intent", "rollback_intent"):
        task.priority_weight += 100
"""
"""$AIRFLOW_HOME/config/airflow_local_settings.py of the stack: a cluster policy, applied when the DAG processor
parses."""


def pytest_collection_modifyitems(items):
    """BEFORE_THE_STACK first; then intent's chain of runs (test_pipeline_local, then test_promotion_local, which builds
    on its champion): its runs follow one another, each started by a test, while the runs started with the stack go on
    beside them; the tests that only check those runs come after. Each module keeps its own order, and every other
    test its place."""
    here = Path(__file__).resolve().parent
    slots = [i for i, item in enumerate(items) if Path(item.path).resolve().parent == here]
    rank = {name: i for i, name in enumerate((*BEFORE_THE_STACK, *CHAIN_FIRST))}
    for i, item in zip(
        slots,
        sorted((items[i] for i in slots), key=lambda item: rank.get(Path(item.path).name, len(rank))),
        strict=True,
    ):
        items[i] = item


def start_runs(client, env: dict[str, str], interval: tuple[datetime, datetime]) -> dict[str, object]:
    """Start every run the tests wait for, at once: unpause STARTED_WITH_THE_STACK, back-fill intent_race's previous
    week
    (two overlapping runs, for the race), and back-fill two past weeks of intent_backfill through the documented
    ``bin/retrain backfill`` (the API server; it unpauses the DAG, allowing 10 runs at once, a backfill's own default,
    and the latest week, due, joins the backfill).
    Returns the CLI's completed process, which its test checks."""
    start = interval[0]
    for model in STARTED_WITH_THE_STACK:
        client.set_paused(f"retrain_{model}", False)
    client.create_backfill(
        "retrain_intent_race", start - timedelta(weeks=1), start - timedelta(weeks=1), max_active_runs=2
    )
    tooling = {**env, "PYTHONPATH": f"{PROJECT_ROOT / 'plugins'}:{PROJECT_ROOT / 'tools'}"}  # bin/retrain's path
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "retrain_tools.cli",
            "backfill",
            "intent_backfill",
            "--api-url",
            client.base_url,
            "--from",
            str((start - timedelta(weeks=max(BACKFILL_WEEKS))).date()),
            "--to",
            str((start - timedelta(weeks=1)).date()),
            "--max-active-runs",
            "10",
        ],
        env=tooling,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return {"backfill_cli": cli}


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """Tiny sample data in a fresh store, and a running Airflow whose DAGs read tiny configs, with the runs the tests
    wait for already started (``start_runs``)."""
    project = TinyProject(tmp_path_factory.mktemp("integration"))
    root, store_root = project.root, project.store_root
    for model in MODELS:
        project.add_model(model, unreachable_floor=model in UNREACHABLE_FLOOR)
    for model in ("intent", "intent_race", "intent_timeout", "intent_faulty"):
        project.land_two_weeks(model)
    project.land_past_weeks("intent_backfill", BACKFILL_WEEKS)  # one partition per past week, for the backfill
    broken = (
        (project.config_dir / "intent.yaml")
        .read_text()
        .replace("name: intent", "name: broken")
        .replace("cadence: weekly", "cadence: hourly")
    )
    (project.config_dir / "broken.yaml").write_text(broken)
    goldens, other = {}, {}
    for model in OTHER_MODELS:  # one raw partition, of the latest complete interval of the model's own cadence
        config = tiny_shipped_config(project.config_dir, model, TINY_EDITS[model])
        data = (
            tiny_sentiment_data(root)
            if model == "sentiment"
            else tiny_retrieval_data(root, model, golden_source=GOLDEN_SOURCE[model])
        )
        loaded = load_config(config)
        start, end = latest_complete_interval(loaded.schedule.calendar, datetime.now(UTC))
        write_csv(
            store_root / f"raw/{model}/dt={start.date()}/part-00000.csv",
            data["rows"],
            (loaded.data.text_column, loaded.data.label_column),
        )
        goldens[model], other[model] = data["golden"], {"interval": (start, end), "rows": len(data["rows"])}
    project.sync_dags()

    env = {**project.env(dict(os.environ)), "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM)}
    (project.airflow_home / "config").mkdir(parents=True)
    (project.airflow_home / "config" / "airflow_local_settings.py").write_text(CHAIN_PRIORITY)
    project.publish_golden(env, MODELS + OTHER_MODELS, goldens)
    registry_status = registry_status_reader(env)
    registry_status("intent")  # creates MLflow's tables now, before several models' jobs at once could each try to
    dag_ids = tuple(f"retrain_{model}" for model in MODELS + OTHER_MODELS)
    with model_server(env) as server, standalone_airflow(env, root, dag_ids) as client:
        started = start_runs(client, env, project.interval)
        yield {
            "client": client,
            "as_user": user_factory(client),
            "registry_status": registry_status,
            "store_root": store_root,
            "interval": project.interval,
            "env": env,
            "root": root,
            "config_dir": project.config_dir,
            "dags_dir": project.dags_dir,
            "log": root / "standalone.log",
            "write_csv": write_csv,
            "other_models": other,
            "started": started,
            "backfill_weeks": BACKFILL_WEEKS,
            "server": server,
        }
