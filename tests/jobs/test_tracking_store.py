"""A fresh SQLite MLflow store survives two first users at once, and a half-migrated one is refused with its repair.

Two models' first runs can each be the first to touch the store: both would run MLflow's schema migrations at once.
The project migrates under a lock beside the database (``retrain.tracking.ready_store``)."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from jobscripts import JOBSIDE
from retrain.paths import job_python
from retrain.runner import LocalJob, job_environment

TRIALS = 3


def first_use(database, start_at: float, name: str) -> subprocess.Popen:
    job = LocalJob(name="first-use", kind="processing", script=Path("-"), arguments={}, result_file=Path("-"))
    env = {**job_environment(job), "MLFLOW_TRACKING_URI": f"sqlite:///{database}"}
    command = [str(job_python()), str(JOBSIDE / "first_use.py"), str(start_at), name]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("trial", range(TRIALS))
def test_two_first_users_of_a_fresh_store_both_succeed(tmp_path, trial):
    database = tmp_path / "mlflow.db"
    start_at = time.time() + 12  # both interpreters have imported mlflow by then
    racers = [first_use(database, start_at, f"retrain_model_{i}") for i in range(2)]
    results = [(racer.wait(timeout=180), *racer.communicate()) for racer in racers]
    for code, _, err in results:
        assert code == 0, err[-3000:]
    ids = {out.strip().splitlines()[-1] for _, out, _ in results}
    assert len(ids) == 2  # two experiments, both created
    again = first_use(database, 0, "retrain_model_0")
    assert again.wait(timeout=180) == 0, again.communicate()[1][-3000:]


def test_a_half_migrated_store_is_refused_with_how_to_repair_it(tmp_path):
    database = tmp_path / "mlflow.db"
    done = first_use(database, 0, "retrain_intent")
    assert done.wait(timeout=180) == 0, done.communicate()[1][-3000:]
    with sqlite3.connect(database) as connection:  # what an interrupted migration leaves behind
        connection.execute("CREATE TABLE _alembic_tmp_metrics (key VARCHAR(250))")
    refused = first_use(database, 0, "retrain_intent")
    assert refused.wait(timeout=180) != 0
    err = refused.communicate()[1]
    assert f"MLflow store {database} was left half-migrated" in err and "_alembic_tmp_metrics" in err
    assert "delete it and rerun the task" in err
