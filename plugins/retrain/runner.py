"""The local runner: start a job script with the job environment's interpreter.

It maps a ``JobSpec`` onto the same contract the managed services use:

- training (SageMaker script mode): ``SM_CHANNEL_<NAME>``, ``SM_MODEL_DIR``,
  ``SM_OUTPUT_DATA_DIR``, ``SM_HPS``, hyperparameters as ``--key value``, and
  ``SM_CHECKPOINT_DIR`` standing in for ``/opt/ml/checkpoints`` so a restart resumes;
- processing: input and output directories passed as arguments (``/opt/ml/processing/…``
  on SageMaker);
- glue: ``--key value`` job arguments, Spark on ``local[*]``.

Output is streamed line by line to the caller's logger, so it lands in the Airflow task log.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from typing import Any

from retrain.jobs import JobSpec
from retrain.paths import INCLUDE_DIR, PROJECT_ROOT, job_python


class JobFailed(RuntimeError):
    """A job script exited non-zero; the message carries its last output lines."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    @property
    def bad_input(self) -> bool:
        """The job rejected its input (exit code EX_DATAERR): the same input fails again, so don't retry."""
        return self.exit_code == os.EX_DATAERR


def job_environment(spec: JobSpec) -> dict[str, str]:
    """Environment variables of the container contract for this job."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "_AIRFLOW", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(INCLUDE_DIR), str(PROJECT_ROOT / "plugins")]),
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    if spec.kind == "training":
        env["SM_HPS"] = json.dumps(spec.arguments, sort_keys=True)
        env["SM_CURRENT_HOST"] = "algo-1"
        env["SM_HOSTS"] = json.dumps(["algo-1"])
        env["SM_NUM_CPUS"] = str(os.cpu_count() or 1)
        env["SM_NUM_GPUS"] = "0"
        for name, path in spec.channels.items():
            env[f"SM_CHANNEL_{name.upper()}"] = str(path)
        if spec.model_dir:
            env["SM_MODEL_DIR"] = str(spec.model_dir)
        if spec.output_dir:
            env["SM_OUTPUT_DATA_DIR"] = str(spec.output_dir)
        if spec.checkpoint_dir:
            env["SM_CHECKPOINT_DIR"] = str(spec.checkpoint_dir)
    env.update(spec.env)
    return env


def command_line(spec: JobSpec) -> list[str]:
    """The job interpreter, the script and ``--key value`` arguments in a stable order."""
    args = [str(job_python()), str(spec.script)]
    for key, value in spec.arguments.items():
        args += [f"--{key}", value]
    return args


def run_job(spec: JobSpec, log: logging.Logger | None = None) -> dict[str, Any]:
    """Run one job to completion, streaming its output; return the JSON it wrote as its result."""
    log = log or logging.getLogger("retrain.runner")
    python = job_python()
    if not python.exists():
        raise JobFailed(f"job environment interpreter not found at {python}; run `make setup` (or set RETRAIN_JOB_PYTHON)")
    for directory in (spec.model_dir, spec.output_dir, spec.checkpoint_dir, spec.result_file.parent):
        if directory:
            directory.mkdir(parents=True, exist_ok=True)
    cmd = command_line(spec)
    log.info("starting %s job: %s", spec.kind, " ".join(cmd))
    started = time.monotonic()
    tail: list[str] = []
    with subprocess.Popen(
        cmd, env=job_environment(spec), cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            log.info("[%s] %s", spec.name, line)
            tail = (tail + [line])[-20:]
        code = proc.wait()
    elapsed = time.monotonic() - started
    if code != 0:
        raise JobFailed(f"{spec.name} exited with code {code} after {elapsed:.1f}s; last output:\n" + "\n".join(tail), code)
    if not spec.result_file.is_file():
        raise JobFailed(f"{spec.name} finished but wrote no result file at {spec.result_file}")
    log.info("%s finished in %.1fs", spec.name, elapsed)
    result = json.loads(spec.result_file.read_text())
    result.setdefault("job_seconds", round(elapsed, 3))
    return result
