"""Where things are on AWS: store keys as S3 URIs, the deployed code bundle, and ``AwsJob``.

Keys are the same on S3 and on disk (DESIGN.md, Contracts); only the bucket depends on the
key's first segment, by the rule in ``retrain.store.layout``. ``aws_job_from_spec`` turns the JobSpec the local runner uses into the
S3 URIs and container paths the Glue and SageMaker builders take.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from retrain.config import AwsConfig
from retrain.jobs import JobSpec
from retrain.store.layout import S3Layout
from retrain.tracking import ARTIFACT_ROOT_ENV

PROCESSING_INPUT = PurePosixPath("/opt/ml/processing/input")
PROCESSING_OUTPUT = PurePosixPath("/opt/ml/processing/output")
PROCESSING_CODE = PROCESSING_INPUT / "code"  # where processing jobs get the project tree (the code bundle's source/)
CHECKPOINT_PATH = "/opt/ml/checkpoints"

def layout(aws: AwsConfig) -> S3Layout:
    """The three buckets of an ``aws:`` config, routed by ``retrain.store.layout``'s one rule."""
    return S3Layout(dataset_bucket=aws.dataset_bucket, artifact_bucket=aws.artifact_bucket, golden_bucket=aws.golden_bucket)


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
    tree unpacked, for Glue scripts and processing inputs.
    """

    bucket: str
    git_sha: str
    digest: str

    @property
    def prefix(self) -> str:
        return f"s3://{self.bucket}/code/{self.digest}"

    @property
    def py_files_uri(self) -> str:
        return f"{self.prefix}/retrain.zip"

    @property
    def sourcedir_uri(self) -> str:
        return f"{self.prefix}/sourcedir.tar.gz"

    @property
    def source_uri(self) -> str:
        return f"{self.prefix}/source"

    def script_uri(self, script: str) -> str:
        """S3 URI of a project-relative script, e.g. ``include/etl/build_dataset.py``."""
        return f"{self.source_uri}/{script}"


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
    input_paths: dict[str, str] = field(default_factory=dict)  # container path of an input, when not /opt/ml/processing/input/<name>
    outputs: dict[str, str] = field(default_factory=dict)
    model_uri: str | None = None
    checkpoint_uri: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def _relative(path: Path, root: Path) -> str | None:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def _mount(key: str, uri: str, is_dir: bool) -> tuple[str, str]:
    """(S3Prefix, container path) of one processing input argument.

    A directory is its prefix with a trailing "/" (so ``golden/intent/v1/`` never also matches
    ``v10/``), mounted at ``/opt/ml/processing/input/<key>``. A file is its own object key,
    which SageMaker downloads under its own name into that directory.
    """
    if is_dir:
        return uri.rstrip("/") + "/", str(PROCESSING_INPUT / key)
    return uri, str(PROCESSING_INPUT / key / PurePosixPath(uri).name)


def aws_job_from_spec(spec: JobSpec, aws: AwsConfig, code: CodeBundle, store_root: Path, project_root: Path) -> AwsJob:
    """Map a JobSpec built against ``store_root`` onto S3 URIs and container paths.

    Rules: channels, model_dir and checkpoint_dir become S3 URIs of the same keys. An
    argument that names a path under the store becomes an S3 URI (glue), or a processing
    input or output mounted in the container (processing; keys ending in ``-dir`` are
    directories, others files); training reads data only through channels, so it refuses
    one. A path under the project becomes project-relative for training (script mode runs
    in the unpacked project tree), its path under the processing code input, or its S3 URI in
    the bundle for Glue, which has no such tree. The store root itself is refused: on AWS it spans three buckets.
    The local tracking settings are replaced: the builders set the tracking server's ARN as
    MLFLOW_TRACKING_URI, and experiment artifacts go under the artifact bucket.
    """
    script = _relative(spec.script, project_root)
    if script is None:
        raise ValueError(f"{spec.name}: script {spec.script} is outside the project {project_root}")
    arguments: dict[str, str] = {}
    inputs: dict[str, str] = {}
    outputs: dict[str, str] = {}
    for key, value in spec.arguments.items():
        if value.startswith("s3://") and spec.kind == "processing":  # an object a task already put on S3 (a model.tar.gz)
            inputs[key], arguments[key] = _mount(key, value, is_dir=False)
            continue
        key_in_store = _relative(Path(value), store_root) if value.startswith("/") else None
        in_project = _relative(Path(value), project_root) if value.startswith("/") else None
        if key_in_store == ".":
            raise ValueError(f"{spec.name}: argument --{key} is the store root, which spans three buckets on AWS; pass the keys the job reads instead")
        if key_in_store is None:
            if in_project is None:
                arguments[key] = value
            else:
                arguments[key] = {"glue": code.script_uri(in_project), "processing": str(PROCESSING_CODE / in_project)}.get(spec.kind, in_project)
        elif spec.kind == "glue":
            arguments[key] = s3_uri(aws, key_in_store)
        elif spec.kind == "training":
            raise ValueError(f"{spec.name}: argument --{key} names store path {value}; training reads data only through channels")
        elif spec.output_dir is not None and Path(value) == spec.output_dir:
            outputs[key] = s3_uri(aws, key_in_store)
            arguments[key] = str(PROCESSING_OUTPUT / key)
        else:
            inputs[key], arguments[key] = _mount(key, s3_uri(aws, key_in_store), is_dir=key.endswith("-dir"))

    def store_uri(path: Path | None, what: str) -> str | None:
        if path is None:
            return None
        key = _relative(path, store_root)
        if key in (None, "."):
            raise ValueError(f"{spec.name}: {what} {path} is not below the store root {store_root}")
        return s3_uri(aws, key)

    if spec.kind == "training":  # a channel is a prefix: "/" keeps train/ from also matching train-extra/
        inputs = {name: store_uri(path, f"channel {name!r}") + "/" for name, path in spec.channels.items()}
    return AwsJob(
        task=spec.name,
        kind=spec.kind,
        script=script,
        arguments=arguments,
        inputs=inputs,
        outputs=outputs,
        model_uri=store_uri(spec.model_dir, "model_dir") if spec.kind == "training" else None,
        checkpoint_uri=store_uri(spec.checkpoint_dir, "checkpoint_dir") if spec.kind == "training" else None,
        env={**{k: v for k, v in spec.env.items() if k not in ("MLFLOW_TRACKING_URI", ARTIFACT_ROOT_ENV)},
             **({ARTIFACT_ROOT_ENV: s3_uri(aws, "mlartifacts")} if ARTIFACT_ROOT_ENV in spec.env else {})},
    )
