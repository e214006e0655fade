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

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from airflow_stack import LABELS, PROJECT_ROOT, standalone_airflow, tiny_config, tiny_rows, write_csv  # tests/ is on pytest's pythonpath
from retrain.airflow_api import AirflowClient
from retrain.dagfiles import sync as sync_dag_files
from retrain.intervals import latest_complete_week
from retrain.paths import job_python

MODELS = ("intent", "intent_strict", "intent_backfill", "intent_race", "intent_timeout")
UNREACHABLE_FLOOR = ("intent_strict", "intent_backfill")


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
        tiny_config(config_dir, labels_file, model, unreachable_floor=model in UNREACHABLE_FLOOR, timeout=model == "intent_timeout")
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
    with standalone_airflow(env, root, [f"retrain_{model}" for model in MODELS]) as client:
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
