"""A real Airflow (``airflow standalone``: scheduler, API server, DAG processor, triggerer)
over tiny data, for the integration tier. Nothing here is mocked."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]

from retrain.airflow_api import AirflowClient, wait_until  # noqa: E402

LABELS = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "pin_blocked"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def latest_complete_week(now: datetime) -> tuple[datetime, datetime]:
    end = datetime(now.year, now.month, now.day, tzinfo=timezone.utc) - timedelta(days=now.weekday())
    return end - timedelta(weeks=1), end


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


def tiny_config(config_dir: Path, labels_file: Path) -> None:
    text = (PROJECT_ROOT / "config" / "models" / "intent.yaml").read_text()
    for old, new in [
        ("data/banking77/categories.json", str(labels_file)),
        ("retries: 2", "retries: 0"),
        ("  golden_sha256: 5dc02b57ced59ded2839e99f93b714068d5fcb2205af5141ab28e61ae36ac629", "  golden_sha256: null"),
        ("epochs: 30", "epochs: 20"),
        ("min_rows: 20", "min_rows: 10"),
        ("requests: 200", "requests: 20"),
        ("warmup: 20", "warmup: 2"),
    ]:
        assert old in text, old
        text = text.replace(old, new)
    config_dir.mkdir(parents=True)
    (config_dir / "intent.yaml").write_text(text)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """Tiny sample data in a fresh store, and a running Airflow whose DAGs read a tiny config."""
    root = tmp_path_factory.mktemp("integration")
    store_root, airflow_home, config_dir = root / "store", root / "airflow", root / "config"
    labels_file = root / "labels.json"
    labels_file.write_text(json.dumps(LABELS))
    tiny_config(config_dir, labels_file)
    start, end = latest_complete_week(datetime.now(timezone.utc))
    rows = tiny_rows(PROJECT_ROOT / "data" / "banking77" / "train.csv", 40)
    golden = tiny_rows(PROJECT_ROOT / "data" / "banking77" / "test.csv", 12)
    older, newer = rows[::2], rows[1::2]
    newer += [rows[0], (rows[1][0].upper() + "!!", rows[1][1]), golden[0]]  # exact dupe, normalised dupe, golden overlap
    write_csv(store_root / f"raw/intent/dt={(start - timedelta(weeks=1)).date()}/part-00000.csv", older)
    write_csv(store_root / f"raw/intent/dt={start.date()}/part-00000.csv", newer)

    env = {
        **os.environ,
        "RETRAIN_PROJECT_ROOT": str(PROJECT_ROOT),
        "RETRAIN_HOME": str(store_root),
        "RETRAIN_CONFIG_DIR": str(config_dir),
        "MLFLOW_TRACKING_URI": f"sqlite:///{store_root / 'mlflow.db'}",
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "PYTHONPATH": str(PROJECT_ROOT / "plugins"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    # golden v1 through the project's own seeding code, in the test's store
    subprocess.run(
        [sys.executable, "-c", (
            "import sys; from pathlib import Path; from retrain.config import load_model; from retrain.store import LocalStore;"
            "from retrain.seed import publish_golden; publish_golden(LocalStore(), load_model('intent'), Path(sys.argv[1]), 'v1')"
        ), str(write_golden(root, golden))],
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
        wait_until(lambda: client.dag("retrain_intent"), 240, "retrain_intent to be parsed")
        yield {"client": client, "store_root": store_root, "interval": (start, end), "env": env, "root": root, "log": root / "standalone.log", "write_csv": write_csv}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def write_golden(root: Path, rows: list[tuple[str, str]]) -> Path:
    path = root / "golden.csv"
    write_csv(path, rows)
    return path
