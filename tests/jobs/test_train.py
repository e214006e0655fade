"""train.py on tiny data, run as SageMaker would run it (subprocess, job interpreter, SM_* env)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess

import pytest

from jobscripts import JOBSIDE  # tests/ is on pytest's pythonpath
from retrain.paths import job_python
from retrain.runner import command_line, job_environment
from trainspec import start_until_epoch  # tests/ is on pytest's pythonpath


@pytest.fixture(scope="module")
def first_run(channels, tmp_path_factory, training):
    spec_for, train = training
    out = tmp_path_factory.mktemp("run-a")
    tracking = f"sqlite:///{out / 'mlflow.db'}"
    return train(
        spec_for(channels, out), {"MLFLOW_TRACKING_URI": tracking, "RETRAIN_LINEAGE": json.dumps({"git_sha": "abc123"})}
    ), out


def test_loss_falls_and_summary_has_provenance(first_run):
    summary, out = first_run
    losses = [epoch["train_loss"] for epoch in summary["history"]]
    assert losses[-1] < losses[0] * 0.8
    assert summary["history"][-1]["val_accuracy"] > 0.4  # 5 classes: chance is 0.2
    for key in (
        "seed",
        "dataset_version",
        "base_model",
        "git_sha",
        "weights_digest",
        "samples_per_second",
        "wall_seconds",
    ):
        assert summary[key] not in (None, ""), key
    assert summary["git_sha"] == "abc123" and summary["dataset_version"] == "ds-tiny"
    for name in ("classifier.json", "head.safetensors", "encoder/config.json", "encoder/tokenizer.json"):
        assert (out / "model" / name).is_file(), name


def test_same_inputs_give_the_same_weights_digest(first_run, channels, tmp_path, training):
    spec_for, train = training
    summary, _ = first_run
    again = train(spec_for(channels, tmp_path))
    assert again["weights_digest"] == summary["weights_digest"]
    other_seed = train(spec_for(channels, tmp_path / "seed8", seed=8))
    assert other_seed["weights_digest"] != summary["weights_digest"]


def test_mlflow_run_has_params_metrics_and_lineage(first_run):
    summary, out = first_run
    db = sqlite3.connect(out / "mlflow.db")
    run_id = summary["mlflow_run_id"]
    params = dict(db.execute("select key, value from params where run_uuid=?", (run_id,)))
    tags = dict(db.execute("select key, value from tags where run_uuid=?", (run_id,)))
    steps = db.execute("select count(*) from metrics where run_uuid=? and key='train_loss'", (run_id,)).fetchone()[0]
    assert params["seed"] == "7" and params["epochs"] == "6"
    assert tags["git_sha"] == "abc123" and tags["weights_digest"] == summary["weights_digest"]
    assert steps == 6  # one point per epoch


def run_statuses(db_path) -> list[str]:
    """MLflow run statuses in creation order (the store's own table, read directly)."""
    return [row[0] for row in sqlite3.connect(db_path).execute("select status from runs order by start_time")]


def test_killed_job_resumes_from_checkpoint_to_the_same_weights(channels, tmp_path, training):
    """Fine-tune one encoder layer; kill the job after epoch 2, restart it, and compare with an uninterrupted run.
    The killed try's MLflow run cannot end itself (SIGKILL): the next try of the same Airflow run marks it KILLED."""
    spec_for, train = training
    uninterrupted = train(spec_for(channels, tmp_path / "whole", trainable_layers=1, epochs=4))
    spec = spec_for(channels, tmp_path / "killed", trainable_layers=1, epochs=4)
    for d in (spec.model_dir, spec.checkpoint_dir):
        d.mkdir(parents=True, exist_ok=True)
    env = {
        **job_environment(spec),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "RETRAIN_LINEAGE": json.dumps({"airflow_run_id": "scheduled__2026-11-16T00:00:00+00:00"}),
    }
    proc = start_until_epoch(spec, env, 2)
    proc.kill()
    proc.wait()
    assert not spec.result_file.exists()
    assert run_statuses(tmp_path / "mlflow.db") == ["RUNNING"]  # what a SIGKILL leaves behind
    resumed = subprocess.run(command_line(spec), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:]
    assert "resuming from" in resumed.stdout and "marked KILLED" in resumed.stdout
    summary = json.loads(spec.result_file.read_text())
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3, 4]
    assert summary["weights_digest"] == uninterrupted["weights_digest"]
    assert run_statuses(tmp_path / "mlflow.db") == ["KILLED", "FINISHED"]


def test_a_stopped_job_ends_its_mlflow_run_as_killed(channels, tmp_path, training):
    """SIGTERM (a task timeout, a stopped SageMaker job) ends the run KILLED before the job exits."""
    spec_for, _ = training
    spec = spec_for(channels, tmp_path, epochs=200)
    for d in (spec.model_dir, spec.checkpoint_dir):
        d.mkdir(parents=True, exist_ok=True)
    env = {**job_environment(spec), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = start_until_epoch(spec, env, 1)
    proc.terminate()
    assert proc.wait(timeout=120) == 128 + 15
    assert run_statuses(tmp_path / "mlflow.db") == ["KILLED"]


def test_bad_channel_fails_clearly(channels, tmp_path, training):
    spec_for, train = training
    spec = spec_for(channels, tmp_path)
    env = {**job_environment(spec), "SM_CHANNEL_TRAIN": str(tmp_path / "empty")}
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(command_line(spec), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "channel holds no examples" in proc.stdout + proc.stderr
    assert os.path.basename(str(tmp_path / "empty")) in proc.stdout + proc.stderr


def test_top_layers_resumed_from_the_frozen_layers_output_match_the_whole_encoder(channels, tmp_path, training):
    """trainable_layers K > 0 trains the top K layers on the cached output of the frozen ones: the split
    forward pass must be the encoder's own, padding included."""
    spec_for, _ = training
    env = job_environment(spec_for(channels, tmp_path))
    done = subprocess.run(
        [str(job_python()), str(JOBSIDE / "top_layers_fixture.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["padded"] > 0  # the mask matters in this batch
    assert all(gap < 1e-5 for gap in got["gaps"].values()), got


def test_a_hub_base_model_is_refused_with_or_without_the_hub_in_reach(tmp_path, channels, training):
    """No job downloads a base model: a hub id is refused by name under the local runner's offline environment
    (HF_HUB_OFFLINE=1) and equally without it, as in an aws job container, where the hub client used to be called
    (and fetched other weights than the local runs trained)."""
    probe = str(JOBSIDE / "resolve_hub_model.py")
    spec_for, _ = training
    env = job_environment(spec_for(channels, tmp_path))
    online_env = {k: v for k, v in env.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    online_env.update({"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"})  # a closed port
    for environment in (env, online_env):
        done = subprocess.run([str(job_python()), probe], env=environment, capture_output=True, text=True, timeout=120)
        assert (
            done.stdout.startswith(
                "builtins.ValueError | base model 'distilbert-base-uncased' is neither a catalogued model"
            )
            and "nothing is downloaded from a model hub" in done.stdout
        ), done.stdout + done.stderr[-2000:]
    assert not (tmp_path / "hf").exists()


def test_a_gpu_only_precision_is_refused_on_cpu_for_any_task(channels, tmp_path, training):
    """--precision is train.py's, shared by every task type: bf16 on a CPU is refused before anything is read or
    written."""
    spec_for, _ = training
    spec = spec_for(channels, tmp_path, precision="bf16")
    for d in (spec.model_dir, spec.checkpoint_dir):
        d.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(command_line(spec), env=job_environment(spec), capture_output=True, text=True, timeout=300)
    assert proc.returncode == os.EX_DATAERR, proc.stderr[-2000:]
    assert "precision bf16 needs a CUDA GPU: on CPU training runs in fp32" in proc.stderr
    assert not any(spec.model_dir.iterdir()) and not any(spec.checkpoint_dir.iterdir())
