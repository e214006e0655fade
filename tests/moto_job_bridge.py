"""A bridge that makes moto, an AWS simulator, run the jobs it is asked to start: the local runner
behind moto's SageMaker and Glue APIs. It is a test harness, not AWS and not a SageMaker emulator.

moto accepts ``CreateTrainingJob``, ``CreateProcessingJob`` and Glue ``StartJobRun`` and reports them
finished at once, without running anything, so their outputs would have to come from nowhere.
Installed into the process that serves moto (``ThreadedMotoServer``), this bridge instead, for each
job the request describes:

1. reports it InProgress (Glue: RUNNING) while it runs, so the provider operators really wait;
2. downloads the S3 inputs the request names from the simulator's S3 into a scratch "container":
   the request's container paths (``/opt/ml/...``) become ``<scratch>/opt/ml/...``;
3. runs the same job script with the local runner's job environment
   (``retrain.runner.job_environment``), passing the request's hyperparameters or container
   arguments and its environment;
4. puts outputs where the service would: processing outputs to their ``S3Output`` URIs, the
   model directory as ``<S3OutputPath>/<job name>/output/model.tar.gz``, checkpoints to
   ``CheckpointConfig.S3Uri``. Glue scripts read and write ``s3://`` themselves;
5. reports Completed (SUCCEEDED), or Failed with ``FailureReason`` set to the script's last
   output lines, as SageMaker and Glue do; not before ``startup_s`` seconds after the request, when
   that is set (see ``MotoLocalJobBridge``).

What differs from AWS, on purpose: the code is the checkout's. The container paths of the code
bundle (``/opt/ml/code``, ``/opt/ml/processing/input/code``, Glue's ``--scriptLocation`` under
``code/<sha>/source/``) map onto the project tree instead of being downloaded. Instance types,
VPC, KMS, network isolation and spot capacity are not simulated; the requests carrying them are
checked against botocore's service model elsewhere (tests/aws/test_requests.py).
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from retrain.paths import PROJECT_ROOT, job_python
from retrain.runner import LocalJob, job_environment
from retrain.store import parse_s3_uri

CODE_MOUNTS = ("/opt/ml/processing/input/code", "/opt/ml/code")
FAILURE_LINES = 12


class MotoLocalJobBridge:
    """Runs the jobs that moto is asked for through the local job environment; see the module docstring.

    ``s3`` is a boto3 S3 client of the simulator; ``extra_env`` is added to every job's environment
    (the simulator's endpoint and fake credentials, the MLflow endpoint). ``jobs`` records every
    job run: name, kind, command, exit code, seconds, and when the script started and ended (``started_at``,
    ``ended_at``: Unix time, the clock Airflow's task instance dates are on).

    ``startup_s``: the least time a job stays InProgress (RUNNING), as the provisioning of real
    SageMaker and Glue jobs (minutes) guarantees. A tiny job here finishes in seconds, and a
    deferred task's trigger can then fire before the scheduler has seen the deferring worker exit
    (the supervisor notices an exit up to 5 s late); Airflow 3.3.1 then fails the resumed task
    ("reported that the task instance finished with state success, but the task instance's state
    attribute is queued"). Tests that run deferred operators under a scheduler set it.
    """

    def __init__(self, s3: Any, scratch: Path, extra_env: dict[str, str], startup_s: float = 0.0) -> None:
        self.s3, self.scratch, self.extra_env = s3, Path(scratch), dict(extra_env)
        self.startup_s = startup_s
        self.jobs: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    # -- S3 -----------------------------------------------------------------------------------

    def download(self, uri: str, local: Path) -> None:
        """An S3Prefix input: every object under a ``.../`` prefix, or the one object a full key names."""
        bucket, prefix = parse_s3_uri(uri)
        local.mkdir(parents=True, exist_ok=True)
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                relative = (
                    key[len(prefix) :].lstrip("/")
                    if prefix.endswith("/")
                    else (key[len(prefix) :].lstrip("/") or PurePosixPath(key).name)
                )
                if (
                    not relative
                    or key.endswith("/")
                    or (not prefix.endswith("/") and key != prefix and not key.startswith(prefix + "/"))
                ):
                    # a full key also matches longer keys (model.tar.gz.bak); the bridge needs none of them
                    continue
                target = local / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(bucket, key, str(target))

    def upload_tree(self, local: Path, uri: str) -> None:
        bucket, prefix = parse_s3_uri(uri)
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            self.s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(local).as_posix()}")

    # -- paths ------------------------------------------------------------------------------------

    def container_path(self, root: Path, value: str) -> str:
        """A container path of the request as a path here: code onto the project tree, the rest under ``root``."""
        for mount in CODE_MOUNTS:
            if value == mount or value.startswith(mount + "/"):
                return str(PROJECT_ROOT / value[len(mount) :].lstrip("/"))
        if value.startswith("/opt/ml/"):
            return str(root / value.lstrip("/"))
        return value

    # -- running a job ------------------------------------------------------------------------------

    def _run(self, name: str, kind: str, command: list[str], env: dict[str, str], root: Path) -> None:
        """Run the script; raise RuntimeError with its last lines (the job's FailureReason) when it fails."""
        log_path = root / "job.log"
        started, started_at = time.monotonic(), time.time()
        with open(log_path, "w") as log:
            code = subprocess.run(command, env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
        seconds, ended_at = time.monotonic() - started, time.time()
        with self._lock:
            self.jobs.append(
                {
                    "name": name,
                    "kind": kind,
                    "command": command,
                    "exit_code": code,
                    "seconds": round(seconds, 3),
                    "started_at": started_at,
                    "ended_at": ended_at,
                    "log": str(log_path),
                }
            )
        if code != 0:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-FAILURE_LINES:]
            raise RuntimeError(f"AlgorithmError: {command[1]} exited with code {code}: " + " | ".join(tail))

    def _environment(self, kind: str, request_env: dict[str, str], root: Path, **spec: Any) -> dict[str, str]:
        env = job_environment(
            LocalJob(
                name="bridge",
                kind=kind,
                script=Path("-"),
                arguments=spec.pop("arguments", {}),
                result_file=Path("-"),
                **spec,
            )
        )
        env.update(  # PYTHONPATH: the runner's, onto the project tree; a container path, under the job's scratch
            {k: self.container_path(root, v) for k, v in request_env.items() if k != "PYTHONPATH"}
        )
        env.update(self.extra_env)
        return env

    def run_training(self, request: dict[str, Any]) -> None:
        name = request["TrainingJobName"]
        root = self.scratch / name
        channels = {}
        for channel in request.get("InputDataConfig", []):
            local = root / "opt/ml/input/data" / channel["ChannelName"]
            self.download(channel["DataSource"]["S3DataSource"]["S3Uri"], local)
            channels[channel["ChannelName"]] = local
        checkpoint = request.get("CheckpointConfig")
        checkpoint_dir = root / "opt/ml/checkpoints"
        if checkpoint:  # SageMaker restores the checkpoint prefix before the script starts
            self.download(checkpoint["S3Uri"].rstrip("/") + "/", checkpoint_dir)
        model_dir, output_dir = root / "opt/ml/model", root / "opt/ml/output/data"
        model_dir.mkdir(parents=True), output_dir.mkdir(parents=True)
        hyperparameters = {k: v for k, v in request["HyperParameters"].items() if not k.startswith("sagemaker_")}
        script = PROJECT_ROOT / request["HyperParameters"]["sagemaker_program"]
        command = [str(job_python()), str(script)] + [
            part for key, value in hyperparameters.items() for part in (f"--{key}", value)
        ]
        env = self._environment(
            "training",
            request.get("Environment", {}),
            root,
            arguments=hyperparameters,
            channels=channels,
            model_dir=model_dir,
            output_dir=output_dir,
            checkpoint_dir=checkpoint_dir,
        )
        try:
            self._run(name, "training", command, env, root)
        finally:
            if checkpoint:  # SageMaker keeps syncing checkpoints, also from a job that fails
                self.upload_tree(checkpoint_dir, checkpoint["S3Uri"])
        archive = root / "model.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted(model_dir.rglob("*")):
                tar.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False)
        bucket, key = parse_s3_uri(
            f"{request['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{name}/output/model.tar.gz"
        )
        self.s3.upload_file(str(archive), bucket, key)

    def run_processing(self, request: dict[str, Any]) -> None:
        name = request["ProcessingJobName"]
        root = self.scratch / name
        for item in request.get("ProcessingInputs", []):
            s3_input = item["S3Input"]
            if self.container_path(root, s3_input["LocalPath"]).startswith(str(PROJECT_ROOT)):
                continue  # the code input: the checkout's tree
            self.download(s3_input["S3Uri"], Path(self.container_path(root, s3_input["LocalPath"])))
        outputs = request.get("ProcessingOutputConfig", {}).get("Outputs", [])
        for item in outputs:
            Path(self.container_path(root, item["S3Output"]["LocalPath"])).mkdir(parents=True, exist_ok=True)
        app = request["AppSpecification"]
        entry = [self.container_path(root, part) for part in app["ContainerEntrypoint"]]
        if PurePosixPath(entry[0]).name.startswith("python"):
            entry[0] = str(job_python())
        command = entry + [self.container_path(root, part) for part in app.get("ContainerArguments", [])]
        env = self._environment("processing", request.get("Environment", {}), root)
        self._run(name, "processing", command, env, root)
        for item in outputs:  # S3UploadMode EndOfJob: uploaded once the script has succeeded
            self.upload_tree(Path(self.container_path(root, item["S3Output"]["LocalPath"])), item["S3Output"]["S3Uri"])

    def run_glue(self, job_name: str, run_id: str, script_location: str, arguments: dict[str, str]) -> None:
        script = (
            PROJECT_ROOT / script_location.split("/source/", 1)[1]
        )  # s3://<artifact>/code/<sha>/source/<project path>
        command = [str(job_python()), str(script), "--JOB_NAME", job_name, "--JOB_RUN_ID", run_id]
        command += [part for key, value in arguments.items() for part in (key, value)]
        root = self.scratch / f"{job_name}-{run_id[:16]}"
        root.mkdir(parents=True)
        self._run(job_name, "glue", command, self._environment("glue", {}, root), root)

    # -- moto ----------------------------------------------------------------------------------------

    def _in_background(self, work: Callable[[], None], done: Callable[[str | None], None]) -> None:
        requested = time.monotonic()

        def target() -> None:
            failure = None
            try:
                work()
            except Exception as exc:  # noqa: BLE001 - any failure is the job's failure, reported as AWS does
                failure = (
                    str(exc)
                    if isinstance(exc, RuntimeError)
                    else f"InternalServerError: {traceback.format_exc(limit=3)}"
                )
            time.sleep(max(0.0, requested + self.startup_s - time.monotonic()))
            done(failure[:1024] if failure else None)

        threading.Thread(target=target, name="moto-local-job-bridge", daemon=True).start()

    _installed = False  # one bridge per process: two would run every job twice

    @contextmanager
    def installed(self) -> Iterator[MotoLocalJobBridge]:  # noqa: C901 - four patches, each a closure over moto's own handler
        """Patch moto's SageMaker and Glue handlers in this process (where the ThreadedMotoServer runs).

        SageMaker is patched where moto parses the request, since its backend drops fields the job
        needs (``Environment``); Glue where a run starts, which sees the run's arguments."""
        from moto.glue.models import FakeJob, FakeJobRun
        from moto.sagemaker.responses import SageMakerResponse

        if MotoLocalJobBridge._installed:
            raise RuntimeError("a MotoLocalJobBridge is installed in this process already")
        bridge = self
        originals = {
            (SageMakerResponse, "create_training_job"): SageMakerResponse.create_training_job,
            (SageMakerResponse, "create_processing_job"): SageMakerResponse.create_processing_job,
            (FakeJob, "start_job_run"): FakeJob.start_job_run,
            (FakeJobRun, "as_dict"): FakeJobRun.as_dict,
        }

        def create_training_job(response):
            request = json.loads(response.body)
            result = originals[(SageMakerResponse, "create_training_job")](response)
            job = response.sagemaker_backend.training_jobs[request["TrainingJobName"]]
            job.training_job_status, job.secondary_status = "InProgress", "Training"

            def done(failure: str | None) -> None:
                job.training_job_status = job.secondary_status = "Failed" if failure else "Completed"
                if failure:
                    job.failure_reason = failure

            bridge._in_background(lambda: bridge.run_training(request), done)
            return result

        def create_processing_job(response):
            request = json.loads(response.body)
            result = originals[(SageMakerResponse, "create_processing_job")](response)
            job = response.sagemaker_backend.processing_jobs[request["ProcessingJobName"]]
            job.processing_job_status = "InProgress"

            def done(failure: str | None) -> None:
                job.processing_job_status = "Failed" if failure else "Completed"
                if failure:
                    job.failure_reason = failure

            bridge._in_background(lambda: bridge.run_processing(request), done)
            return result

        def start_job_run(job, *args, **kwargs):
            run_id = originals[(FakeJob, "start_job_run")](job, *args, **kwargs)
            run = next(r for r in job.job_runs if r.job_run_id == run_id)
            run.bridge_state, run.bridge_error = "RUNNING", None

            def done(failure: str | None) -> None:
                run.bridge_state, run.bridge_error = ("FAILED", failure) if failure else ("SUCCEEDED", None)

            bridge._in_background(
                lambda: bridge.run_glue(job.name, run_id, job.command["ScriptLocation"], dict(run.arguments or {})),
                done,
            )
            return run_id

        def as_dict(run):
            described = originals[(FakeJobRun, "as_dict")](run)
            if getattr(run, "bridge_state", None):
                described["JobRunState"] = run.bridge_state
                if run.bridge_error:
                    described["ErrorMessage"] = run.bridge_error
            return described

        SageMakerResponse.create_training_job = create_training_job
        SageMakerResponse.create_processing_job = create_processing_job
        FakeJob.start_job_run = start_job_run
        FakeJobRun.as_dict = as_dict
        MotoLocalJobBridge._installed = True
        try:
            yield self
        finally:
            for (owner, attribute), original in originals.items():
                setattr(owner, attribute, original)
            MotoLocalJobBridge._installed = False

    def summary(self) -> list[dict[str, Any]]:
        """What ran, for a test's failure message or a benchmark's figures."""
        return [{k: v for k, v in job.items() if k != "command"} for job in self.jobs]


def dumps(jobs: list[dict[str, Any]]) -> str:
    return json.dumps(jobs, indent=2, sort_keys=True)
