"""Where things live on the local backend. Every path can be overridden by environment."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

PROJECT_ROOT = Path(os.environ.get("RETRAIN_PROJECT_ROOT", Path(__file__).resolve().parents[2]))
INCLUDE_DIR = PROJECT_ROOT / "include"


def config_dir() -> Path:
    """The model configs' directory, read when asked (``RETRAIN_CONFIG_DIR``), like the store root."""
    return Path(os.environ.get("RETRAIN_CONFIG_DIR", PROJECT_ROOT / "config" / "models"))


def store_root() -> Path:
    """Root of the local object store (the local stand-in for the S3 bucket)."""
    return Path(os.environ.get("RETRAIN_HOME", PROJECT_ROOT / ".retrain"))


def job_python() -> Path:
    """Interpreter of the job environment: the local stand-in for a SageMaker/Glue container."""
    return Path(os.environ.get("RETRAIN_JOB_PYTHON", PROJECT_ROOT / ".venv-jobs" / "bin" / "python"))


def mlflow_tracking_uri() -> str:
    """MLflow on SQLite under the store root unless MLFLOW_TRACKING_URI says otherwise."""
    return os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{store_root() / 'mlflow.db'}")


def api_base_url(get: Callable[[str], str | None]) -> str:
    """The API server's URL by Airflow's own ``[api]`` options, each read through ``get(key)``: ``base_url`` when set
    (a bare path such as ``/airflow`` is on localhost), else ``http://localhost:<port>`` (Airflow's default port 8080).
    Airflow's own links use ``base_url`` else localhost:8080, whatever the port."""
    port = (get("port") or "").strip() or "8080"
    base = (get("base_url") or "").strip()
    if not base or base.startswith("/"):
        base = f"http://localhost:{port}{base}"
    return base.rstrip("/")
