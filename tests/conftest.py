"""Test-wide isolation: Airflow's home and the object store live in a temp dir, never in the repo's."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="retrain-tests-"))
os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["RETRAIN_HOME"] = str(_SESSION_DIR / "store")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("RETRAIN_BACKEND", "local")
os.environ.pop("MLFLOW_TRACKING_URI", None)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path):
    """A fresh, empty local object store."""
    from retrain.store import LocalStore

    return LocalStore(tmp_path / "store")


_TIER_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Time per tier (tests/<tier>/…): setup, call and teardown, shared fixtures included."""
    parts = report.nodeid.split("/")
    tier = parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"
    _TIER_SECONDS[tier] = _TIER_SECONDS.get(tier, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if _TIER_SECONDS:
        terminalreporter.write_sep("-", "time per tier")
        for tier, seconds in sorted(_TIER_SECONDS.items()):
            terminalreporter.write_line(f"{tier:<12} {seconds:8.1f} s")
