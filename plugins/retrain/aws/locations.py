"""Where things are on AWS: store keys as S3 URIs, the deployed code bundle, and ``AwsJob``.

Keys are the same on S3 and on disk (``retrain.store``); only the bucket depends on the
key's first segment, by the rule in ``retrain.store.layout``. ``aws_job_from_spec`` maps a backend-neutral
JobSpec (the one the local runner maps onto paths) onto the S3 URIs and container paths the Glue and
SageMaker builders take.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Literal

from retrain.aws.config import AwsConfig
from retrain.base_models import STAGED_ENV, known_base_model
from retrain.jobs import JobSpec, ProjectFile, StoreRoot, Upstream, Value
from retrain.store.layout import S3Layout
from retrain.tracking import ARTIFACT_ROOT_ENV

PROCESSING_INPUT = PurePosixPath("/opt/ml/processing/input")
PROCESSING_OUTPUT = PurePosixPath("/opt/ml/processing/output")
PROCESSING_CODE = PROCESSING_INPUT / "code"  # where processing jobs get the project tree (the code bundle's source/)
CHECKPOINT_PATH = "/opt/ml/checkpoints"
TRAINING_INPUT = PurePosixPath("/opt/ml/input/data")  # where SageMaker puts each training channel's files
BASE_MODEL_INPUT = "base_model"  # the channel (training) or input (processing) of the staged base model


def layout(aws: AwsConfig) -> S3Layout:
    """The three buckets of an ``aws:`` config, routed by ``retrain.store.layout``'s one rule."""
    return S3Layout(
        dataset_bucket=aws.dataset_bucket, artifact_bucket=aws.artifact_bucket, golden_bucket=aws.golden_bucket
    )


def s3_uri(aws: AwsConfig, key: str) -> str:
    """``s3://<bucket>/<key>`` for a store key such as ``runs/intent/<run>/metrics.json``.

    The same URI as ``S3Store.uri(key)`` of a store built on the same buckets: both route
    through ``S3Layout``, so a job's request and the Airflow side name one object.
    """
    return layout(aws).uri(key)


@dataclass(frozen=True)
class CodeBundle:
    """The job code as ``bin/retrain deploy push`` uploads it, under ``s3://<artifact bucket>/code/<digest>/``.

    ``digest`` is the content digest of the code (``deploy-manifest.json``'s ``code_digest``), so
    unchanged code keeps its objects across commits and changed code never overwrites a deployed
    one; ``git_sha`` is the commit it was built from, for lineage. ``retrain.zip`` holds the
    ``retrain`` package and include/'s packages for Glue's ``--extra-py-files``;
    ``sourcedir.tar.gz`` is the project tree for training (script mode); ``source/`` is the same
    tree unpacked, for Glue scripts and processing inputs; ``glue-wheels/`` holds the wheels Glue installs
    with ``--additional-python-modules`` (from the job lock, so Glue fetches nothing at start).
    """

    bucket: str
    git_sha: str
    digest: str
    glue_wheels: tuple[str, ...] = ()  # file names under glue-wheels/: build_dataset's Python modules for Glue

    @property
    def prefix(self) -> str:
        return f"s3://{self.bucket}/code/{self.digest}"

    @property
    def glue_wheel_uris(self) -> list[str]:
        return [f"{self.prefix}/glue-wheels/{name}" for name in self.glue_wheels]

    @property
    def py_files_uri(self) -> str:
        return f"{self.prefix}/retrain.zip"

    @property
    def sourcedir_uri(self) -> str:
        return f"{self.prefix}/sourcedir.tar.gz"

    @property
    def source_uri(self) -> str:
        """The prefix of the unpacked code, ending in ``/``: an S3Prefix input takes every key that starts with it, and
        without the slash that would include ``sourcedir.tar.gz``."""
        return f"{self.prefix}/source/"

    def script_uri(self, script: str) -> str:
        """S3 URI of a project-relative script, e.g. ``include/etl/build_dataset.py``."""
        return f"{self.source_uri}{script}"


@dataclass(frozen=True)
class AwsJob:
    """One job as the AWS builders take it: every location already an S3 URI or a container path.

    ``inputs`` are training channels (name -> S3 prefix) or processing inputs (name -> S3
    prefix, mounted at ``/opt/ml/processing/input/<name>``); ``outputs`` are processing
    outputs (name -> S3 prefix, from ``/opt/ml/processing/output/<name>``).
    """

    task: str
    kind: Literal["glue", "training", "processing"]
    script: str
    arguments: dict[str, str]
    inputs: dict[str, str] = field(default_factory=dict)
    input_paths: dict[str, str] = field(
        default_factory=dict
    )  # container path of an input, when not /opt/ml/processing/input/<name>
    outputs: dict[str, str] = field(default_factory=dict)
    model_uri: str | None = None
    checkpoint_uri: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def _mount(name: str, uri: str, is_dir: bool) -> tuple[str, str]:
    """(S3Prefix, container path) of one processing input argument.

    A directory is its prefix with a trailing "/" (so ``golden/intent/v1/`` never also matches
    ``v10/``), mounted at ``/opt/ml/processing/input/<name>``. A file is its own object key,
    which SageMaker downloads under its own name into that directory.
    """
    if is_dir:
        return uri.rstrip("/") + "/", str(PROCESSING_INPUT / name)
    return uri, str(PROCESSING_INPUT / name / PurePosixPath(uri).name)


def _argument(
    spec: JobSpec,
    name: str,
    value: Value,
    aws: AwsConfig,
    code: CodeBundle,
    inputs: dict[str, str],
    outputs: dict[str, str],
) -> str:
    """One argument of ``spec`` as the AWS job gets it; a processing input or output it needs goes into
    ``inputs``/``outputs``."""
    if isinstance(value, str):
        return value
    if isinstance(value, StoreRoot):
        raise ValueError(
            f"{spec.name}: argument --{name} is the store root, which spans three buckets on AWS; pass the keys the "
            "job reads instead"
        )
    if isinstance(value, ProjectFile):
        if PurePosixPath(value.path).is_absolute():  # outside the project: only a job on this machine opens it
            return value.path
        in_bundle = {"glue": code.script_uri(value.path), "processing": str(PROCESSING_CODE / value.path)}
        return in_bundle.get(spec.kind, value.path)
    if spec.kind == "glue":
        return value.location if isinstance(value, Upstream) else s3_uri(aws, value.key)
    if spec.kind == "training":
        raise ValueError(
            f"{spec.name}: argument --{name} names a store location; training reads data only through channels"
        )
    if isinstance(value, Upstream):
        inputs[name], argument = _mount(name, value.location, is_dir=False)
        return argument
    if value.kind == "output":
        outputs[name] = s3_uri(aws, value.key)
        return str(PROCESSING_OUTPUT / name)
    inputs[name], argument = _mount(name, s3_uri(aws, value.key), is_dir=value.kind == "dir")
    return argument


def aws_job_from_spec(spec: JobSpec, aws: AwsConfig, code: CodeBundle) -> AwsJob:
    """Map a backend-neutral JobSpec onto S3 URIs and container paths: the aws backend's one place for that.

    - a ``Key`` becomes the S3 URI of the same key (Glue reads and writes URIs); in a processing job a
      ``file`` or ``dir`` key is an input mounted under ``/opt/ml/processing/input/<name>`` and an
      ``output`` key a processing output from ``/opt/ml/processing/output/<name>``; training reads data
      only through its channels, so it refuses one;
    - an ``Upstream`` location (an object an earlier task put on S3, such as a ``model.tar.gz``) passes
      through to Glue and is mounted as a file in a processing job;
    - a ``ProjectFile`` is its S3 URI in the code bundle (Glue), its path under the processing code
      input, or its project-relative path (training: script mode runs in the unpacked project tree);
      an absolute path, a file outside the project, is passed as it is;
    - ``StoreRoot`` is refused: on AWS the store spans three buckets (``retrain.aws.requests.aws_job``
      replaces it first);
    - channels, the model and the checkpoint key become S3 URIs (a channel a prefix ending in "/", so
      ``train/`` never also matches ``train-extra/``).
    The builders set the tracking server's ARN as MLFLOW_TRACKING_URI; a tracking job's experiment
    artifacts go under the artifact bucket.
    """
    arguments: dict[str, str] = {}
    inputs: dict[str, str] = {}
    outputs: dict[str, str] = {}
    for name, value in spec.arguments.items():
        arguments[name] = _argument(spec, name, value, aws, code, inputs, outputs)
    env = {}
    for name, value in spec.env.items():
        if not isinstance(value, str):
            raise ValueError(
                f"{spec.name}: environment variable {name} names a store location, which no AWS job reads from its "
                "environment"
            )
        env[name] = value
    if spec.tracking:
        env[ARTIFACT_ROOT_ENV] = s3_uri(aws, "mlartifacts")
    training = spec.kind == "training"
    if training:
        inputs = {name: s3_uri(aws, key).rstrip("/") + "/" for name, key in spec.channels.items()}
    return AwsJob(
        task=spec.name,
        kind=spec.kind,
        script=spec.script,
        arguments=arguments,
        inputs=inputs,
        outputs=outputs,
        model_uri=s3_uri(aws, spec.model_key) if training and spec.model_key else None,
        checkpoint_uri=s3_uri(aws, spec.checkpoint_key) if training and spec.checkpoint_key else None,
        env=env,
    )


def with_base_model(job: AwsJob, aws: AwsConfig, name: str) -> AwsJob:
    """``job`` with the staged copy of base model ``name`` (``bin/retrain deploy build`` stages it under the
    artifact bucket) as one more channel or processing input, and ``RETRAIN_BASE_MODEL_DIR`` naming where the
    container has it; the job checks its weights digest there. A model that is not catalogued has no staged copy."""
    model = known_base_model(name)
    if model is None:
        raise ValueError(
            f"{job.task}: base model {name!r} is not catalogued (retrain/base_models.py); nothing is staged"
        )
    root = TRAINING_INPUT if job.kind == "training" else PROCESSING_INPUT
    return replace(
        job,
        inputs={**job.inputs, BASE_MODEL_INPUT: s3_uri(aws, model.staged_key) + "/"},
        env={**job.env, STAGED_ENV: str(root / BASE_MODEL_INPUT)},
    )
