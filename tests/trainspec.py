"""train.py's job spec for the job tests (a train/validation channel pair and the directories SageMaker
would give the job, under one output directory), and running it as the local runner does: to the end,
or killed after an epoch and started again."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from retrain.paths import INCLUDE_DIR, PROJECT_ROOT
from retrain.runner import LocalJob, command_line, job_environment


def registry_env(root: Path) -> dict[str, str]:
    """The environment of a job-side process (a training job, the registry, the model server) over a store and an
    MLflow (SQLite) of its own under ``root``."""
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "RETRAIN_HOME": str(root / "store"),
        "PYTHONPATH": f"{INCLUDE_DIR}:{PROJECT_ROOT / 'plugins'}",
        "HF_HUB_OFFLINE": "1",
    }


def training_spec(channels: dict[str, Path], out: Path, arguments: dict[str, str], overrides: dict) -> LocalJob:
    """``arguments`` as train.py takes them (``--key value``), then ``overrides`` (``key_name=value``) on top."""
    arguments = {**arguments, **{k.replace("_", "-"): str(v) for k, v in overrides.items()}}
    return LocalJob(
        name="train_model",
        kind="training",
        script=INCLUDE_DIR / "retrain_jobs" / "train.py",
        arguments=arguments,
        channels={"train": channels["train"], "validation": channels["validation"]},
        model_dir=out / "model",
        output_dir=out / "output",
        checkpoint_dir=out / "checkpoints",
        result_file=out / "model" / "training_summary.json",
    )


def run_job(spec: LocalJob, env: dict | None = None) -> subprocess.CompletedProcess:
    """The job under the container contract (``env`` on top of it), to its end."""
    for d in (spec.model_dir, spec.checkpoint_dir):
        d.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        command_line(spec), env={**job_environment(spec), **(env or {})}, capture_output=True, text=True, timeout=600
    )


def train_job(spec: LocalJob, env: dict | None = None) -> dict:
    """A training job that must succeed; its training_summary.json."""
    proc = run_job(spec, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(spec.result_file.read_text())


def start_until_epoch(spec: LocalJob, env: dict, epoch: int) -> subprocess.Popen:
    """The job started, returned once it has logged ``epoch`` and written its checkpoint."""
    for d in (spec.model_dir, spec.checkpoint_dir):
        d.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(command_line(spec), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if f'"epoch": {epoch},' in line:
            break
    while not (spec.checkpoint_dir / "last.pt").exists():
        pass
    return proc


def kill_and_resume(spec: LocalJob, epoch: int) -> dict:
    """SIGKILL the job after ``epoch`` (nothing can be caught), check it left no result, start it again and
    return the resumed job's summary, having checked that it resumed from the checkpoint."""
    proc = start_until_epoch(spec, job_environment(spec), epoch)
    proc.kill()
    proc.wait()
    assert not spec.result_file.exists()
    resumed = run_job(spec)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout
    return json.loads(spec.result_file.read_text())
