"""MLflow experiments whose artifacts live under the store root, whatever the working directory.

MLflow's SQLite store gives an experiment created without an artifact location the
directory ``./mlruns/<id>`` of whichever process created it, so a scheduler, CLI or
worker started elsewhere would scatter model artifacts, and cleaning the store would
leave them behind. Every experiment this project logs to is therefore created here,
with an explicit location under one artifact root: ``<store root>/mlartifacts`` locally,
or ``$RETRAIN_MLFLOW_ARTIFACT_ROOT`` (an ``s3://`` URI on the aws backend). Runs, their
logged models (MLflow 3 ``LoggedModel``) and registered versions all keep their files
under their experiment's location. MLflow's ``Default`` experiment keeps whatever
location the process that created the database gave it; nothing here logs to it.

Runs in the job environment; mlflow is imported inside the functions.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from retrain.locks import exclusive
from retrain.paths import store_root

ARTIFACT_ROOT_ENV = "RETRAIN_MLFLOW_ARTIFACT_ROOT"


class HalfMigratedStore(RuntimeError):
    """A SQLite tracking store whose schema migration was interrupted: no run can use it until it is repaired."""


class ArtifactLocationWarning(UserWarning):
    """An existing experiment keeps its artifacts outside the artifact root."""


def artifact_root(root: Path | None = None) -> str:
    """URI under which every experiment keeps its artifacts: $RETRAIN_MLFLOW_ARTIFACT_ROOT, else <store
    root>/mlartifacts."""
    override = os.environ.get(ARTIFACT_ROOT_ENV, "").strip()
    if override:
        return override.rstrip("/")
    return (Path(root or store_root()).resolve() / "mlartifacts").as_uri()


def experiment_location(name: str) -> str:
    """Artifact location of the experiment ``name``: a path-safe form of the name under the artifact root."""
    return f"{artifact_root()}/{re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('._') or 'experiment'}"


def check_experiment(experiment) -> bool:
    """True if an experiment keeps its artifacts under the artifact root; otherwise warn, naming it and its location."""
    root = artifact_root()
    if experiment.artifact_location.rstrip("/").startswith(root + "/"):
        return True
    warnings.warn(
        f"MLflow experiment {experiment.name!r} (id {experiment.experiment_id}) keeps its artifacts at "
        f"{experiment.artifact_location}, outside the artifact root {root}: its runs' artifacts go there. "
        f"Log to a new experiment name, or delete this one, to keep them under the root.",
        ArtifactLocationWarning,
        stacklevel=2,
    )
    return False


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI; None for a server, a managed MLflow or a file store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def refuse_half_migrated(database: Path) -> None:
    """Raise HalfMigratedStore when ``database`` holds the ``_alembic_tmp_*`` tables an interrupted migration leaves."""
    import sqlite3

    if not database.is_file():
        return
    with sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '\\_alembic\\_tmp\\_%' ESCAPE '\\'"
        ).fetchall()
    if rows:
        raise HalfMigratedStore(
            f"MLflow store {database} was left half-migrated by an interrupted first use (tables "
            f"{', '.join(sorted(name for (name,) in rows))}); no run can use it. If it holds nothing to keep, delete "
            f"it and rerun the task; otherwise restore it from a backup (its runs and registered models live there)."
        )


def ready_store() -> None:
    """Create or migrate a SQLite tracking store once, under a lock beside it, before any client of this process uses
    it. Two first users at once would otherwise both run MLflow's migrations and can leave the store half-migrated,
    which no retry repairs. A server or a managed MLflow migrates its own database: nothing to do."""
    import mlflow

    database = sqlite_path(mlflow.get_tracking_uri())
    if database is None:
        return
    with exclusive(database.with_name(f".{database.name}.lock")):
        refuse_half_migrated(database)
        mlflow.MlflowClient().search_experiments(max_results=1)  # the first client creates and migrates the tables


def ensure_experiment(name: str) -> str:
    """Id of the experiment ``name``, created with its location under the artifact root if it does not exist."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    ready_store()
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=experiment_location(name))
        except MlflowException:
            found = client.get_experiment_by_name(name)  # another job created it first
            if found is None:
                raise
    check_experiment(found)
    return found.experiment_id
