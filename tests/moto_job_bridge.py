"""A bridge that makes moto, an AWS simulator, run the jobs it is asked to start, as SageMaker and Glue
would start them. It is a test harness, not AWS and not a SageMaker emulator.

moto accepts ``CreateTrainingJob``, ``CreateProcessingJob`` and Glue ``StartJobRun`` and reports them
finished at once, without running anything. Installed into the process that serves moto
(``ThreadedMotoServer``), this bridge instead, for each job the request describes:

1. reports it InProgress (Glue: RUNNING) while it runs, so the provider operators really wait;
2. builds a scratch "container" whose paths are the request's container paths (``/opt/ml/...`` becomes
   ``<scratch>/<job>/opt/ml/...``), and downloads into it what the service would: the S3 inputs the
   request names, and the **staged code bundle** from the simulated S3, never the checkout
   (training: ``sagemaker_submit_directory``'s sourcedir.tar.gz unpacked into ``/opt/ml/code``;
   processing: the ``code`` input under ``/opt/ml/processing/input/code``; Glue: the
   ``ScriptLocation`` object and the ``--extra-py-files`` zip, which goes on the PYTHONPATH);
3. runs the job with the interpreter and packages of its configured image (``image_interpreter``,
   ``glue_interpreter``), with the arguments exactly as the service passes them: training, the
   hyperparameters as the training toolkit turns them into ``--key value`` (sorted, ``sagemaker_*`` left
   out, each value JSON-decoded then printed) plus the ``SM_*`` environment; processing, the container
   entrypoint and arguments; Glue, the job's DefaultArguments overlaid by the run's Arguments, then
   ``--JOB_NAME`` and ``--JOB_RUN_ID``. The training toolkit installs the bundle's requirements.txt
   first: here each pin must already be the image's version, or the job fails (nothing is installed);
4. puts outputs where the service would: processing outputs to their ``S3Output`` URIs, the
   model directory as ``<S3OutputPath>/<job name>/output/model.tar.gz``, checkpoints to
   ``CheckpointConfig.S3Uri``;
5. reports Completed (SUCCEEDED), or Failed with ``FailureReason`` (Glue: ``ErrorMessage``, the uncaught
   exception's last line, as Glue reports it) set from the script's output; not before ``startup_s``
   seconds after the request, when that is set (see ``MotoLocalJobBridge``).

What is translated, and only this: ``s3://`` to the simulator. boto3 in a job reaches moto through
``AWS_ENDPOINT_URL`` (``extra_env``). Spark has no S3 connector here (no hadoop-aws jar, no network to
fetch one), so ``S3Mirror`` is the one place where ``s3://`` is mapped for Spark: before a Glue run it
copies the buckets the run's arguments name from moto into a local mirror, gives Spark a Hadoop
filesystem for the ``s3`` scheme over that mirror (``ViewFileSystemOverloadScheme`` with one mount
table per bucket, through the ``spark-defaults.conf`` of a ``SPARK_CONF_DIR`` the bridge writes), and
after the run copies what Spark wrote back to moto. The same file overloads Spark's ``file`` scheme so
that it sees only the mirror: Spark can read no path of the driver's local disk, as Glue's executors,
on other machines, cannot. The job code has no simulator branch.

The bridge refuses a job that opens a local path it was not given: ``tests/simulator_guard/sitecustomize.py``
(an audit hook, first on the job's PYTHONPATH) fails any ``open`` outside the job's container, its
interpreter's prefix and the operating system's directories, and the bridge fails the job when it
recorded one. The container has its own HOME and TMPDIR, as a real one has.

Not simulated: instance types, VPC, KMS, network isolation and spot capacity (the requests carrying
them are checked against botocore's service model in tests/aws/test_requests.py); the images
themselves (``image_interpreter`` maps the project's image to the job environment built from the same
lock; no container runs); Glue's own Spark cluster (local Spark with ``local[2]``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from retrain.paths import job_python
from retrain.store import parse_s3_uri

FAILURE_LINES = 12
GUARD_DIR = Path(__file__).resolve().parent / "simulator_guard"
GLUE_VERSIONS = ("5.0", "5.1")  # Python 3.11 and Spark 3.5, as the jobs lock pins them
S3_URI = re.compile(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/|$)")


class ImageRefused(RuntimeError):
    """A job names an image or runtime the simulator has no lock for; its message names the request field."""


def image_interpreter(image_uri: str, field: str) -> Path:
    """The interpreter that stands for a SageMaker image: the job environment, for the project's image only.

    The project's image (images/Dockerfile) is built from the lock ``.venv-jobs`` is installed from, and its tag is
    that lock's digest, so its Python and packages are that environment's. Any other image (a stock Deep Learning
    Container, or the job image built from another lock) has packages this machine does not have, so a job naming one
    is refused instead of run on packages it would not have on AWS."""
    from retrain.aws.images import check_job_image

    try:
        check_job_image(image_uri)
    except ValueError as exc:
        raise ImageRefused(f"ClientError: {field}: {exc}; the simulator runs no other image") from None
    return job_python()


def glue_interpreter(glue_version: str) -> Path:
    """The interpreter that stands for a Glue runtime: the job environment, whose Python and pyspark match Glue 5."""
    if glue_version not in GLUE_VERSIONS:
        raise ImageRefused(f"ClientError: GlueVersion {glue_version!r}: the simulator runs Glue {GLUE_VERSIONS}")
    return job_python()


def toolkit_arguments(hyperparameters: dict[str, str]) -> list[str]:
    """``--key value`` as the SageMaker training toolkit builds them: sagemaker_* left out, keys sorted, each
    value JSON-decoded when it parses and printed with str() (so "true" arrives as "True")."""

    def value(text: str) -> str:
        try:
            decoded = json.loads(text)
        except ValueError:
            return text
        if isinstance(decoded, dict):
            return ",".join(f"{k}={v}" for k, v in sorted(decoded.items()))
        return str(decoded)

    user = {k: v for k, v in hyperparameters.items() if not k.startswith("sagemaker_")}
    return [part for key in sorted(user) for part in (f"--{key}" if len(key) > 1 else f"-{key}", value(user[key]))]


def glue_arguments(default_arguments: dict[str, str], run_arguments: dict[str, str], name: str, run_id: str):
    """The script's argv after its path, as Glue passes it: the job's DefaultArguments overlaid by the run's
    Arguments, then the job name and run id."""
    merged = {**default_arguments, **run_arguments}
    return [part for key, value in merged.items() for part in (key, value)] + [
        "--JOB_NAME",
        name,
        "--JOB_RUN_ID",
        run_id,
    ]


class S3Mirror:
    """The one place where ``s3://`` is translated for Spark: a local copy of the buckets a Glue run names.

    ``pull`` copies the data prefixes (``SPARK_PREFIXES``) of each bucket from the simulator into
    ``<root>/<bucket>/``. The rest of a bucket (the code bundle, Glue's wheels, the staged base models, MLflow's
    artifacts, run records) is read through boto3 or by Glue itself, never by Spark; copying it made each simulated
    Glue run download hundreds of MB. A Spark read outside the copy fails the run, so the narrowing cannot hide one;
    ``spark_conf_dir`` writes a spark-defaults.conf that serves ``s3://<bucket>/<key>`` from there and hides every
    other local path from Spark; ``push`` uploads what the run wrote there (new or changed files) back to the
    simulator."""

    def __init__(self, s3: Any, root: Path) -> None:
        self.s3, self.root, self.pulled = s3, Path(root), {}

    SPARK_PREFIXES = ("raw/", "datasets/", "golden/")  # what build_dataset's Spark reads and writes

    def pull(self, buckets: set[str]) -> None:
        for bucket, prefix in ((b, p) for b in sorted(buckets) for p in self.SPARK_PREFIXES):
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    target = self.root / bucket / item["Key"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self.s3.download_file(bucket, item["Key"], str(target))
                    self.pulled[str(target)] = target.stat().st_mtime_ns
            (self.root / bucket).mkdir(parents=True, exist_ok=True)

    def push(self) -> None:
        for path in sorted(p for p in self.root.rglob("*") if p.is_file()):
            if self.pulled.get(str(path)) == path.stat().st_mtime_ns or path.name.endswith(".crc"):
                continue
            bucket, key = path.relative_to(self.root).as_posix().split("/", 1)
            self.s3.upload_file(str(path), bucket, key)

    def spark_conf_dir(self, conf_dir: Path, local_dir: Path) -> Path:
        """SPARK_CONF_DIR: ``s3`` and ``file`` both viewed through mount tables that name only the mirror."""
        target = "org.apache.hadoop.fs.RawLocalFileSystem"  # raw: no .crc files beside the objects, as on S3
        lines = [
            "spark.hadoop.fs.s3.impl org.apache.hadoop.fs.viewfs.ViewFileSystemOverloadScheme",
            "spark.hadoop.fs.s3.impl.disable.cache true",
            "spark.hadoop.fs.file.impl org.apache.hadoop.fs.viewfs.ViewFileSystemOverloadScheme",
            "spark.hadoop.fs.file.impl.disable.cache true",
            f"spark.hadoop.fs.viewfs.overload.scheme.target.file.impl {target}",
            f"spark.hadoop.fs.viewfs.mounttable.default.link.{self.root} file://{self.root}",
            f"spark.local.dir {local_dir}",
        ]
        lines += [
            f"spark.hadoop.fs.viewfs.mounttable.{bucket.name}.linkFallback file://{bucket}"
            for bucket in sorted(p for p in self.root.iterdir() if p.is_dir())
        ]
        conf_dir.mkdir(parents=True, exist_ok=True)
        (conf_dir / "spark-defaults.conf").write_text("\n".join(lines) + "\n")
        return conf_dir


class MotoLocalJobBridge:
    """Runs the jobs that moto is asked for as SageMaker and Glue would; see the module docstring.

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
        """An S3Prefix input as SageMaker fetches it: every object whose key starts with the prefix, as a string (so
        ``.../source`` also takes ``.../sourcedir.tar.gz``, as ``dir.tar.gz``), at the key's rest below ``local``; the
        one object a full key names lands under its own name."""
        bucket, prefix = parse_s3_uri(uri)
        local.mkdir(parents=True, exist_ok=True)
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                relative = key[len(prefix) :].lstrip("/") or PurePosixPath(key).name
                if key.endswith("/"):
                    continue  # a folder marker
                target = local / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(bucket, key, str(target))

    def download_object(self, uri: str, target: Path) -> Path:
        bucket, key = parse_s3_uri(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.s3.download_file(bucket, key, str(target))
        return target

    def upload_tree(self, local: Path, uri: str) -> None:
        bucket, prefix = parse_s3_uri(uri)
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            self.s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(local).as_posix()}")

    # -- the container --------------------------------------------------------------------------

    @staticmethod
    def container_path(root: Path, value: str) -> str:
        """A container path of the request (``/opt/ml/...``) as the same path under the job's scratch root."""
        if value == "/opt/ml" or value.startswith("/opt/ml/"):
            return str(root / value.lstrip("/"))
        return value

    def role_credentials(self, role_arn: str) -> dict[str, str]:
        """SageMaker and Glue run a job under its execution role's temporary credentials. The simulator's STS hands
        them out for the role's account, so the job acts in the account its request names, not the simulator's
        default one."""
        import boto3

        sts = boto3.client(
            "sts",
            endpoint_url=self.s3.meta.endpoint_url,
            region_name=self.s3.meta.region_name,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        credentials = sts.assume_role(RoleArn=role_arn, RoleSessionName="retrain-job")["Credentials"]
        return {
            "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
            "AWS_SESSION_TOKEN": credentials["SessionToken"],
        }

    def _container_env(
        self, root: Path, request_env: dict[str, str], pythonpath: list[str], role_arn: str
    ) -> dict[str, str]:
        """What a job's process gets: a clean environment, its own HOME and TMPDIR, the request's variables
        (container paths under ``root``), the guard first on PYTHONPATH, then the simulator's endpoints and the
        execution role's credentials."""
        for name in ("home", "tmp"):
            (root / name).mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(root / "home"),
            "TMPDIR": str(root / "tmp"),
            "PYTHONUNBUFFERED": "1",
            **{k: v for k, v in os.environ.items() if k in ("JAVA_HOME", "SPARK_LOCAL_IP")},
        }
        env.update({k: ":".join(self.container_path(root, p) for p in v.split(":")) for k, v in request_env.items()})
        env["PYTHONPATH"] = os.pathsep.join([str(GUARD_DIR), *pythonpath, *filter(None, [env.get("PYTHONPATH")])])
        env["RETRAIN_SIMULATOR_ALLOWED_PATHS"] = str(root)
        env["RETRAIN_SIMULATOR_VIOLATIONS"] = str(root / "guard-violations.txt")
        env.update(self.extra_env)
        env.update(self.role_credentials(role_arn))
        return env

    # -- running a job ------------------------------------------------------------------------------

    def _run(self, name: str, kind: str, command: list[str], env: dict[str, str], root: Path, cwd: Path) -> None:
        """Run the script; raise RuntimeError with its FailureReason when it fails or opened a path it was not given."""
        log_path = root / "job.log"
        started, started_at = time.monotonic(), time.time()
        with open(log_path, "w") as log:
            code = subprocess.run(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT).returncode
        seconds, ended_at = time.monotonic() - started, time.time()
        violations = root / "guard-violations.txt"
        refused = sorted(set(violations.read_text().split())) if violations.is_file() else []
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
                    "refused_paths": refused,
                }
            )
        if refused:
            raise RuntimeError(f"AlgorithmError: the job opened local paths it was not given: {', '.join(refused[:5])}")
        if code != 0:
            raise RuntimeError(failure_reason(kind, command, code, log_path.read_text(errors="replace")))

    @staticmethod
    def discard(root: Path) -> None:
        """After a job succeeded and its outputs went to S3: its container's files go, as a real container's do, but
        for the job's log. A failed job's container stays for the test's report. (Each container holds its own HOME
        with a model cache, up to 0.5 GB; kept, a run of the aws tier left 3 GB behind.)"""
        for path in root.iterdir():
            if path.name != "job.log":
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()

    def require_pins(self, python: Path, requirements: Path) -> None:
        """The training toolkit pip-installs the bundle's requirements.txt; here the image must already hold each
        pin (``name==version``), since nothing is installed: a pin the image lacks fails the job."""
        pins = dict(
            line.split("#", 1)[0].strip().split("==", 1)
            for line in requirements.read_text().splitlines()
            if "==" in line.split("#", 1)[0]
        )
        probe = "import json,sys,importlib.metadata as m\nout={}\nfor n in json.loads(sys.argv[1]):\n"
        probe += "    try: out[n]=m.version(n)\n    except m.PackageNotFoundError: out[n]=None\nprint(json.dumps(out))"
        found = json.loads(subprocess.check_output([str(python), "-c", probe, json.dumps(sorted(pins))], text=True))
        wrong = [f"{n}=={v} (image: {found[n]})" for n, v in sorted(pins.items()) if found[n] != v.strip()]
        if wrong:
            raise RuntimeError(f"InstallError: requirements.txt pins what the image lacks: {', '.join(wrong)}")

    def run_training(self, request: dict[str, Any]) -> None:
        name = request["TrainingJobName"]
        root = self.scratch / name
        python = image_interpreter(request["AlgorithmSpecification"]["TrainingImage"], "TrainingImage")
        hyperparameters = request["HyperParameters"]
        channels = {}
        for channel in request.get("InputDataConfig", []):
            local = root / "opt/ml/input/data" / channel["ChannelName"]
            self.download(channel["DataSource"]["S3DataSource"]["S3Uri"], local)
            channels[channel["ChannelName"]] = local
        code_dir = root / "opt/ml/code"
        with tarfile.open(self.submit_directory(root, hyperparameters["sagemaker_submit_directory"])) as tar:
            tar.extractall(code_dir, filter="data")
        if (code_dir / "requirements.txt").is_file():
            self.require_pins(python, code_dir / "requirements.txt")
        checkpoint = request.get("CheckpointConfig")
        checkpoint_dir = Path(self.container_path(root, checkpoint["LocalPath"])) if checkpoint else None
        if checkpoint:  # SageMaker restores the checkpoint prefix before the script starts
            self.download(checkpoint["S3Uri"].rstrip("/") + "/", checkpoint_dir)
        model_dir, output_dir = root / "opt/ml/model", root / "opt/ml/output/data"
        model_dir.mkdir(parents=True), output_dir.mkdir(parents=True)
        env = self._container_env(root, request.get("Environment", {}), [], request["RoleArn"])
        env.update(training_env(hyperparameters, channels, model_dir, output_dir, checkpoint_dir))
        command = [
            str(python),
            str(code_dir / hyperparameters["sagemaker_program"]),
            *toolkit_arguments(hyperparameters),
        ]
        try:
            self._run(name, "training", command, env, root, cwd=code_dir)
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
        self.discard(root)

    def submit_directory(self, root: Path, where: str) -> Path:
        """The code archive ``sagemaker_submit_directory`` names, as the training toolkit takes it: an ``s3://`` URI it
        downloads, or a container path (a file in an input channel, already downloaded with the channels)."""
        if where.startswith("s3://"):
            return self.download_object(where, root / "sourcedir.tar.gz")
        return Path(self.container_path(root, where))

    def run_processing(self, request: dict[str, Any]) -> None:
        name = request["ProcessingJobName"]
        root = self.scratch / name
        app = request["AppSpecification"]
        python = image_interpreter(app["ImageUri"], "AppSpecification.ImageUri")
        for item in request.get("ProcessingInputs", []):  # the code input too: the staged bundle's source/
            s3_input = item["S3Input"]
            self.download(s3_input["S3Uri"], Path(self.container_path(root, s3_input["LocalPath"])))
        outputs = request.get("ProcessingOutputConfig", {}).get("Outputs", [])
        for item in outputs:
            Path(self.container_path(root, item["S3Output"]["LocalPath"])).mkdir(parents=True, exist_ok=True)
        entry = [self.container_path(root, part) for part in app["ContainerEntrypoint"]]
        if entry[0] in ("python", "python3"):  # the image's interpreter, found on its PATH
            entry[0] = str(python)
        command = entry + [self.container_path(root, part) for part in app.get("ContainerArguments", [])]
        env = self._container_env(root, request.get("Environment", {}), [], request["RoleArn"])
        self._run(name, "processing", command, env, root, cwd=root)
        for item in outputs:  # S3UploadMode EndOfJob: uploaded once the script has succeeded
            self.upload_tree(Path(self.container_path(root, item["S3Output"]["LocalPath"])), item["S3Output"]["S3Uri"])
        self.discard(root)

    def require_wheel(self, uri: str) -> None:
        """Glue's pip installs each ``--additional-python-modules`` entry before the script starts and fails the run on
        one it cannot fetch. The simulator runs on the job environment, which holds the same lock's packages, so it
        only checks that each is a staged ``s3://`` wheel (``--no-index``: nothing comes from the internet)."""
        if not (uri.startswith("s3://") and uri.endswith(".whl")):
            raise RuntimeError(f"--additional-python-modules {uri!r}: not a wheel staged in S3 (pip has --no-index)")
        bucket, key = parse_s3_uri(uri)
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
        except self.s3.exceptions.ClientError:
            raise RuntimeError(f"--additional-python-modules {uri}: no such object; pip cannot install it") from None

    def run_glue(self, job: dict[str, Any], run_id: str, run_arguments: dict[str, str]) -> None:
        """One Glue run: the script and --extra-py-files from S3, the buckets the arguments name mirrored for
        Spark (``S3Mirror``), Glue's argv."""
        root = self.scratch / f"{job['Name']}-{run_id[:16]}"
        python = glue_interpreter(job["GlueVersion"])
        defaults = dict(job.get("DefaultArguments") or {})
        script_uri = job["Command"]["ScriptLocation"]
        script = self.download_object(script_uri, root / "glue" / PurePosixPath(parse_s3_uri(script_uri)[1]).name)
        py_files = [
            str(self.download_object(uri, root / "glue" / "py-files" / PurePosixPath(parse_s3_uri(uri)[1]).name))
            for uri in filter(None, defaults.get("--extra-py-files", "").split(","))
        ]
        for path in py_files:
            zipfile.ZipFile(path).testzip()  # Glue refuses a bundle that is not a zip
        for uri in filter(None, defaults.get("--additional-python-modules", "").split(",")):
            self.require_wheel(uri)
        arguments = glue_arguments(defaults, run_arguments, job["Name"], run_id)
        mirror = S3Mirror(self.s3, root / "s3-mirror")
        mirror.pull(
            {match.group(1) for value in arguments for match in S3_URI.finditer(value)} | buckets_named(arguments)
        )
        env = self._container_env(root, {}, py_files, job["Role"])
        env["SPARK_CONF_DIR"] = str(mirror.spark_conf_dir(root / "spark-conf", root / "tmp" / "spark"))
        try:
            self._run(job["Name"], "glue", [str(python), str(script), *arguments], env, root, cwd=root)
        finally:
            mirror.push()  # what Spark wrote stays on S3, also after a failure (as on Glue)
        self.discard(root)

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
                lambda: bridge.run_glue(job.as_dict(), run_id, dict(run.arguments or {})),
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


def buckets_named(arguments: list[str]) -> set[str]:
    """Bucket names passed bare (``--artifact-bucket name``), besides the ones inside ``s3://`` URIs."""
    return {value for flag, value in zip(arguments, arguments[1:], strict=False) if flag.endswith("-bucket")}


def training_env(
    hyperparameters: dict[str, str],
    channels: dict[str, Path],
    model_dir: Path,
    output_dir: Path,
    checkpoint: Path | None,
) -> dict[str, str]:
    """The ``SM_*`` variables the training toolkit sets (those the scripts read, and the host ones)."""
    env = {
        "SM_HPS": json.dumps({k: v for k, v in hyperparameters.items() if not k.startswith("sagemaker_")}),
        "SM_CURRENT_HOST": "algo-1",
        "SM_HOSTS": json.dumps(["algo-1"]),
        "SM_NUM_CPUS": str(os.cpu_count() or 1),
        "SM_NUM_GPUS": "0",
        "SM_MODEL_DIR": str(model_dir),
        "SM_OUTPUT_DATA_DIR": str(output_dir),
        "SM_CHANNELS": json.dumps(sorted(channels)),
        **{f"SM_CHANNEL_{name.upper()}": str(path) for name, path in channels.items()},
    }
    if checkpoint is not None:
        env["SM_CHECKPOINT_DIR"] = str(checkpoint)  # where CheckpointConfig.LocalPath lands in this container
    return env


def failure_reason(kind: str, command: list[str], code: int, output: str) -> str:
    """SageMaker's FailureReason (AlgorithmError with the output's last lines); Glue's ErrorMessage (the uncaught
    exception's last line, as Glue reports it, else the exit code)."""
    lines = output.strip().splitlines()
    if kind == "glue":
        raised = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception)\b.*: ", line)]
        return raised[-1] if raised else f"Command failed with exit code {code}: " + " | ".join(lines[-3:])
    prefix = f"AlgorithmError: {PurePosixPath(command[1]).name} exited with code {code}: "
    return prefix + " | ".join(lines[-FAILURE_LINES:])[-(1024 - len(prefix)) :]  # the end: where the error is


def stage_code_bundle(s3: Any, bucket: str, config_dir: Path, project_root: Path) -> str:
    """Upload the code bundle that ``bin/retrain deploy build`` makes and ``deploy push`` uploads to
    ``s3://<bucket>/code/<digest>/``; returns the digest (``RETRAIN_CODE_DIGEST``)."""
    import tempfile

    from retrain_tools.deploy import archive
    from retrain_tools.deploy.bundle import code_files, glue_py_files, load_configs

    code = code_files(load_configs(config_dir), project_root)
    digest = archive.tree_digest(code)
    with tempfile.TemporaryDirectory() as scratch:
        tar, zipped = Path(scratch) / "sourcedir.tar.gz", Path(scratch) / "retrain.zip"
        archive.write_tar_gz(tar, code)
        archive.write_zip(zipped, glue_py_files(code))
        s3.upload_file(str(tar), bucket, f"code/{digest}/sourcedir.tar.gz")
        s3.upload_file(str(zipped), bucket, f"code/{digest}/retrain.zip")
    for name, data in sorted(code.items()):
        s3.put_object(Bucket=bucket, Key=f"code/{digest}/source/{name}", Body=data)
    return digest


def stage_glue_wheels(s3: Any, bucket: str, digest: str, project_root: Path) -> tuple[str, ...]:
    """Upload the Glue wheels that ``bin/retrain deploy build`` stages under ``code/<digest>/glue-wheels/`` (the job
    lock's wheels for build_dataset's modules, from the deploy tool's per-lock cache); returns their file names
    (``RETRAIN_GLUE_WHEELS``), which the Glue request lists in ``--additional-python-modules``."""
    from retrain.paths import job_python
    from retrain_tools.deploy.bundle import glue_wheels

    wheels = glue_wheels(project_root, job_python(), project_root / "dist" / "glue-wheels")
    for name, data in wheels.items():
        s3.put_object(Bucket=bucket, Key=f"code/{digest}/glue-wheels/{name}", Body=data)
    return tuple(sorted(wheels))
