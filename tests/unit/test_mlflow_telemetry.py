"""Both sides switch MLflow's telemetry off when imported, unless told otherwise: its thread edits os.environ while
other threads iterate it (a training job failed with KeyError '_MLFLOW_TELEMETRY_SESSION_ID'), and no job may call a
host outside."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from retrain.paths import job_python

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIDES = {
    "retrain (Airflow side, registry jobs)": (sys.executable, "retrain", "plugins"),
    "retrain_jobs (training and evaluation)": (None, "retrain_jobs", "include"),
}


@pytest.mark.parametrize("side", sorted(SIDES))
@pytest.mark.parametrize(("given", "expected"), [(None, "true"), ("false", "false")])
def test_importing_a_side_switches_mlflow_telemetry_off_unless_told(side, given, expected):
    python, package, folder = SIDES[side]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_DISABLE_TELEMETRY"}
    env["PYTHONPATH"] = os.path.join(PROJECT, folder)
    if given is not None:
        env["MLFLOW_DISABLE_TELEMETRY"] = given
    code = f"import os, {package}; print(os.environ['MLFLOW_DISABLE_TELEMETRY'])"
    out = subprocess.run(
        [str(python or job_python()), "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == expected
