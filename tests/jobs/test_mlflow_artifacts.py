"""MLflow artifacts land under the store root, whatever directory a job is started from.

Training and registration run through the real job scripts from an unrelated working
directory, with a temp RETRAIN_HOME and no artifact-root override: every artifact (run
files, evidence, the logged model behind the registered version) is found under
``$RETRAIN_HOME/mlartifacts``, and the working directory stays empty.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from jobscripts import JOBSIDE  # tests/ is on pytest's pythonpath
from retrain.paths import INCLUDE_DIR, PROJECT_ROOT, job_python
from retrain.tracking import ARTIFACT_ROOT_ENV

pytestmark = pytest.mark.skipif(not job_python().exists(), reason=f"job environment missing at {job_python()}")

REGISTRY = PROJECT_ROOT / "plugins" / "retrain" / "registry.py"
EXPERIMENT = "retrain_intent/tracking test"  # not path-safe as it stands


def job(world, *args: str) -> subprocess.CompletedProcess:
    """The job interpreter with ``args``, started from the unrelated working directory."""
    return subprocess.run(
        [str(job_python()), *args], env=world["env"], cwd=world["cwd"], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def world(channels, tmp_path_factory, training):
    """One model trained and registered by the real scripts, both started from an unrelated directory."""
    spec_for, train = training
    root = tmp_path_factory.mktemp("tracking")
    home, cwd = root / "home", root / "elsewhere"
    home.mkdir()
    cwd.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if k != ARTIFACT_ROOT_ENV},
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "RETRAIN_HOME": str(home),
        "PYTHONPATH": f"{INCLUDE_DIR}:{PROJECT_ROOT / 'plugins'}",
        "HF_HUB_OFFLINE": "1",
    }
    world = {"env": env, "cwd": cwd, "home": home, "root": root}
    model = train(spec_for(channels, root / "m", epochs=2, experiment_name=EXPERIMENT), env, cwd=cwd)
    evidence = {"summary": f"{model['model_dir']}/training_summary.json"}
    proc = job(
        world,
        str(REGISTRY),
        "register",
        "--model",
        "intent",
        "--model-dir",
        model["model_dir"],
        "--run-id",
        model["mlflow_run_id"],
        "--tags-json",
        "{}",
        "--evidence-json",
        json.dumps(evidence),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ArtifactLocationWarning" not in proc.stderr
    found = job(world, str(JOBSIDE / "mlflow_locations.py"))  # every location MLflow recorded
    assert found.returncode == 0, found.stderr[-3000:]
    return {**world, "model": model, "locations": json.loads(found.stdout.strip().splitlines()[-1])}


def test_artifacts_land_under_the_store_root_not_the_working_directory(world):
    artifacts = world["home"] / "mlartifacts"
    files = {p.relative_to(artifacts).as_posix() for p in artifacts.rglob("*") if p.is_file()}
    experiment_dir = "retrain_intent_tracking_test"
    run = world["model"]["mlflow_run_id"]
    assert f"{experiment_dir}/{run}/artifacts/training_summary.json" in files  # logged by train.py
    assert f"{experiment_dir}/{run}/artifacts/evaluation/training_summary.json" in files  # evidence, by the registry
    assert any(
        f.startswith(f"{experiment_dir}/models/") and f.endswith("/artifacts/MLmodel") for f in files
    )  # the logged model
    assert sorted(p.name for p in world["cwd"].iterdir()) == []  # no mlruns/, no mlartifacts/, nothing


def test_every_recorded_location_is_under_the_store_root(world):
    root = (world["home"] / "mlartifacts").resolve().as_uri() + "/"
    where = world["locations"]
    assert where["experiments"][EXPERIMENT] == root + "retrain_intent_tracking_test"
    assert where["runs"] == {
        EXPERIMENT: [where["experiments"][EXPERIMENT] + f"/{world['model']['mlflow_run_id']}/artifacts"],
        "Default": [],
    }
    assert len(where["logged_models"]) == 1 and where["logged_models"][0].startswith(root)
    assert where["versions"] == where["logged_models"]  # the registered version points at the logged model's files


def test_an_experiment_outside_the_root_is_reported_not_silently_used(world):
    foreign = (world["root"] / "legacy-mlruns").as_uri()
    proc = job(world, str(JOBSIDE / "legacy_experiment.py"), foreign, EXPERIMENT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if "ArtifactLocationWarning" in line]
    assert len(warnings) == 1, proc.stderr  # the experiment under the root passes silently
    assert (
        "MLflow experiment 'legacy' (id " in warnings[0]
        and f"keeps its artifacts at {foreign}, outside the artifact root" in warnings[0]
    )
