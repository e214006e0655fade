"""Where MLflow artifacts go: derived from the store root, never from the working directory."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from retrain.config import load_model
from retrain.jobs import RunContext, train_model_spec
from retrain.runner import local_job
from retrain.tracking import (
    ARTIFACT_ROOT_ENV,
    ArtifactLocationWarning,
    artifact_root,
    check_experiment,
    experiment_location,
)


def test_artifact_root_is_under_the_store_root(tmp_path, monkeypatch):
    monkeypatch.delenv(ARTIFACT_ROOT_ENV, raising=False)
    monkeypatch.setenv("RETRAIN_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert artifact_root() == (tmp_path / "home" / "mlartifacts").as_uri()
    assert artifact_root(tmp_path / "other") == (tmp_path / "other" / "mlartifacts").as_uri()
    assert experiment_location("retrain_intent") == (tmp_path / "home" / "mlartifacts" / "retrain_intent").as_uri()
    assert experiment_location("a/b c:d") == (tmp_path / "home" / "mlartifacts" / "a_b_c_d").as_uri()
    assert experiment_location("..") == (tmp_path / "home" / "mlartifacts" / "experiment").as_uri()


def test_override_wins_for_s3(monkeypatch):
    monkeypatch.setenv(ARTIFACT_ROOT_ENV, "s3://bucket/mlflow/")
    assert artifact_root() == "s3://bucket/mlflow"
    assert experiment_location("retrain_intent") == "s3://bucket/mlflow/retrain_intent"


def test_an_experiment_elsewhere_is_named_in_a_warning(tmp_path, monkeypatch):
    monkeypatch.delenv(ARTIFACT_ROOT_ENV, raising=False)
    monkeypatch.setenv("RETRAIN_HOME", str(tmp_path))
    inside = SimpleNamespace(
        name="retrain_intent", experiment_id="1", artifact_location=experiment_location("retrain_intent")
    )
    assert check_experiment(inside) is True
    prefix_only = SimpleNamespace(name="x", experiment_id="2", artifact_location=artifact_root() + "-old/x")
    outside = SimpleNamespace(name="old", experiment_id="3", artifact_location="file:///srv/mlruns/3")
    with pytest.warns(
        ArtifactLocationWarning, match=r"MLflow experiment 'old' \(id 3\) keeps its artifacts at file:///srv/mlruns/3"
    ):
        assert check_experiment(outside) is False
    with pytest.warns(ArtifactLocationWarning, match="'x'"):
        assert check_experiment(prefix_only) is False


def test_jobs_are_told_the_artifact_root_of_their_store(store, monkeypatch):
    ctx = RunContext(
        dag_id="retrain_intent",
        run_id="manual__1",
        interval_start=None,
        interval_end=None,
        upstream={"build_dataset": {"dataset_version": "ds-abc"}},
    )
    monkeypatch.delenv(ARTIFACT_ROOT_ENV, raising=False)
    spec = local_job(train_model_spec(load_model("intent"), ctx), store)
    assert spec.env[ARTIFACT_ROOT_ENV] == (store.root.resolve() / "mlartifacts").as_uri()
