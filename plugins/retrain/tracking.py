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

from retrain.paths import store_root

ARTIFACT_ROOT_ENV = "RETRAIN_MLFLOW_ARTIFACT_ROOT"


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


def ensure_experiment(name: str) -> str:
    """Id of the experiment ``name``, created with its location under the artifact root if it does not exist."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

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
