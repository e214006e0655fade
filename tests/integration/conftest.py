"""A real Airflow (``airflow standalone``: scheduler, API server, DAG processor, triggerer)
over tiny data, for the integration tier. Nothing here is mocked.

Tiny models share the data: ``intent`` (the shipped policy), ``intent_strict``, whose gate
floor no model can reach, so its runs show a gate rejection, and ``intent_backfill`` (the
same unreachable floor, three weekly partitions) for backfills, and ``intent_race`` (like
``intent``) for two overlapping runs, and ``intent_timeout``, whose approval times out after 18 s. Their DAG files are
generated into the stack's own DAGs folder by the project's ``dags sync``, as a user adding
a model would; ``broken.yaml`` is a config with a bad field, which must show up as an
import error while the others load.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from retrain.airflow_api import AirflowClient, wait_until
from retrain.dagfiles import sync as sync_dag_files
from retrain.intervals import latest_complete_week
from retrain.paths import job_python
from retrain.runner import stop_process_group

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LABELS = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "pin_blocked"]
MODELS = ("intent", "intent_strict", "intent_backfill", "intent_race", "intent_timeout")
UNREACHABLE_FLOOR = ("intent_strict", "intent_backfill")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_rows(path: Path, per_label: int) -> list[tuple[str, str]]:
    taken: dict[str, int] = {label: 0 for label in LABELS}
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["category"] in taken and taken[row["category"]] < per_label:
                taken[row["category"]] += 1
                rows.append((row["text"], row["category"]))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["text", "category"])
        writer.writerows(rows)


def tiny_config(config_dir: Path, labels_file: Path, name: str) -> None:
    """The shipped intent config, shrunk for tiny data; intent_strict adds an unreachable floor."""
    text = (PROJECT_ROOT / "config" / "models" / "intent.yaml").read_text()
    replacements = [
        ("name: intent", f"name: {name}"),
        ("data/banking77/categories.json", str(labels_file)),
        ("retries: 2", "retries: 0"),
        ("  golden_sha256: 5dc02b57ced59ded2839e99f93b714068d5fcb2205af5141ab28e61ae36ac629", "  golden_sha256: null"),
        ("epochs: 30", "epochs: 20"),
        ("min_rows: 20", "min_rows: 10"),
        ("requests: 200", "requests: 20"),
        ("warmup: 20", "warmup: 2"),
        ("min_total_examples: 1000", "min_total_examples: 50"),
        ("min_class_support: 20", "min_class_support: 5"),
        ("per_class_floor: 0.50", "per_class_floor: 0.0"),
        ("per_class_max_regression: 0.10", "per_class_max_regression: 1.0"),
        ("    macro_f1: 0.85\n", "    macro_f1: 0.999\n" if name in UNREACHABLE_FLOOR else "    macro_f1: 0.5\n"),
        ("    accuracy: 0.85\n", "    accuracy: 0.5\n"),
        ("    macro_f1: -0.01\n", "    macro_f1: -1.0\n"),
        ("    accuracy: -0.01\n", "    accuracy: -1.0\n"),
        ("    margin: -0.01 ", "    margin: -1.0 "),
    ]
    if name == "intent_timeout":
        replacements.append(("response_timeout_hours: 168", "response_timeout_hours: 0.005"))
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    (config_dir / f"{name}.yaml").write_text(text)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """Tiny sample data in a fresh store, and a running Airflow whose DAGs read tiny configs."""
    root = tmp_path_factory.mktemp("integration")
    store_root, airflow_home, config_dir = root / "store", root / "airflow", root / "config"
    config_dir.mkdir()
    labels_file = root / "labels.json"
    labels_file.write_text(json.dumps(LABELS))
    start, end = latest_complete_week(datetime.now(timezone.utc))
    rows = tiny_rows(PROJECT_ROOT / "data" / "banking77" / "train.csv", 40)
    golden = tiny_rows(PROJECT_ROOT / "data" / "banking77" / "test.csv", 12)
    write_csv(root / "golden.csv", golden)
    older, newer = rows[::2], rows[1::2]
    newer += [rows[0], (rows[1][0].upper() + "!!", rows[1][1]), golden[0]]  # exact dupe, normalised dupe, golden overlap
    for model in MODELS:
        tiny_config(config_dir, labels_file, model)
    for model in ("intent", "intent_strict", "intent_race", "intent_timeout"):
        write_csv(store_root / f"raw/{model}/dt={(start - timedelta(weeks=1)).date()}/part-00000.csv", older)
        write_csv(store_root / f"raw/{model}/dt={start.date()}/part-00000.csv", newer)
    for weeks_back in (3, 2, 1):  # intent_backfill: one partition per past week, for a three-week backfill
        write_csv(store_root / f"raw/intent_backfill/dt={(start - timedelta(weeks=weeks_back)).date()}/part-00000.csv", rows[weeks_back::3])
    broken = (config_dir / "intent.yaml").read_text().replace("name: intent", "name: broken").replace("cadence: weekly", "cadence: hourly")
    (config_dir / "broken.yaml").write_text(broken)
    dags_dir = root / "dags"
    sync_dag_files(config_dir, dags_dir)

    env = {
        **os.environ,
        "RETRAIN_PROJECT_ROOT": str(PROJECT_ROOT),
        "RETRAIN_HOME": str(store_root),
        "RETRAIN_CONFIG_DIR": str(config_dir),
        "MLFLOW_TRACKING_URI": f"sqlite:///{store_root / 'mlflow.db'}",
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_dir),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,alice:op,bob:op",
        "PYTHONPATH": str(PROJECT_ROOT / "plugins"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    for model in MODELS:  # golden v1 through the project's own seeding code
        subprocess.run(
            [sys.executable, "-c", (
                "import sys; from pathlib import Path; from retrain.config import load_model; from retrain.store import LocalStore;"
                "from retrain.seed import publish_golden; publish_golden(LocalStore(), load_model(sys.argv[1]), Path(sys.argv[2]), 'v1')"
            ), model, str(root / "golden.csv")],
            env=env, check=True,
        )
    port = free_port()
    env.update({"AIRFLOW__API__PORT": str(port), "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/"})
    log = open(root / "standalone.log", "wb")
    proc = subprocess.Popen(["airflow", "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = AirflowClient(f"http://localhost:{port}", airflow_home)
        wait_until(client.healthy, 240, "the API server and scheduler")
        wait_until(lambda: (airflow_home / "simple_auth_manager_passwords.json.generated").exists(), 60, "generated passwords")
        client.login("admin")
        for model in MODELS:
            wait_until(lambda: client.dag(f"retrain_{model}"), 240, f"retrain_{model} to be parsed")

        def as_user(name: str) -> AirflowClient:
            return AirflowClient(client.base_url, airflow_home).login(name)

        def registry_status(model: str = "intent") -> dict:
            out = subprocess.run(
                [str(job_python()), str(PROJECT_ROOT / "plugins" / "retrain" / "registry.py"), "status", "--model", model],
                env={**env, "PYTHONPATH": f"{PROJECT_ROOT / 'include'}:{PROJECT_ROOT / 'plugins'}"}, capture_output=True, text=True, check=True,
            )
            return json.loads(out.stdout)

        yield {
            "client": client, "as_user": as_user, "registry_status": registry_status, "store_root": store_root,
            "interval": (start, end), "env": env, "root": root, "config_dir": config_dir, "dags_dir": dags_dir, "log": root / "standalone.log", "write_csv": write_csv,
        }
    finally:
        stop_process_group(proc)
