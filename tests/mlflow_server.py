"""A real ``mlflow server`` from the job environment, standing in for a SageMaker managed tracking server.

Jobs reach it through the ``sagemaker-mlflow`` plugin's ``SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT``;
it serves no artifacts, as SageMaker's does not: jobs write them to the experiment's ``s3://``
location themselves.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from retrain.paths import job_python
from retrain.runner import free_port, stop_process_group


@contextmanager
def local_mlflow_server(root: Path, environment: Callable[[Path], dict[str, str]]) -> Iterator[int]:
    """Start ``mlflow server`` (SQLite under ``root``) with ``environment(root)``; yield its port; stop it.

    Skips when the job environment lacks sagemaker-mlflow, which the managed path needs."""
    probe = subprocess.run([str(job_python()), "-c", "import sagemaker_mlflow"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"the job environment ({job_python()}) lacks sagemaker-mlflow (requirements-jobs.txt installs it)")
    port = free_port()
    command = [
        str(job_python().parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--default-artifact-root",
        (root / "default").as_uri(),
        "--no-serve-artifacts",
        "--workers",
        "1",
    ]
    # No job execution: MLflow's server otherwise starts eight huey consumers that poll all the time (about 40% of
    # one core here) for GenAI jobs that neither SageMaker's tracking server nor this project runs.
    env = {**environment(root), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    with open(root / "server.log", "w") as log:
        # Its own session, so stopping it also stops the uvicorn process it starts.
        server = subprocess.Popen(
            command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 600  # a loaded 2-core CI machine took over 120 s
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as health:
                        if health.status == 200:
                            break
                except OSError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not come up: {(root / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
            yield port
        finally:
            stop_process_group(server, timeout=20)
