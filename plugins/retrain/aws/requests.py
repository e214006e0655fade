"""Run-time assembly of the aws backend's requests: model config + RunContext → validated request.

The same backend-neutral JobSpecs the local runner maps onto paths are mapped here onto buckets,
S3 URIs and container paths (``aws_job_from_spec``). The aws operators call these functions inside ``execute``,
never at parse time. Plain Python: no Airflow and no boto3 (botocore's service model is read
lazily by ``schema.validate_request``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from typing import Any

from retrain import jobs
from retrain.aws import glue, sagemaker
from retrain.aws.locations import (
    PROCESSING_INPUT,
    AwsJob,
    CodeBundle,
    aws_job_from_spec,
    layout,
    s3_uri,
    with_base_model,
)
from retrain.aws.names import glue_job_name, job_name
from retrain.aws.schema import validate_request
from retrain.config import AwsConfig, ModelConfig
from retrain.user_input import one_line

GIT_SHA_ENV = "RETRAIN_GIT_SHA"  # set from the deploy manifest on MWAA (startup.sh), which has no git
CODE_DIGEST_ENV = "RETRAIN_CODE_DIGEST"  # the manifest's code_digest: where the job code is on S3
GLUE_WHEELS_ENV = "RETRAIN_GLUE_WHEELS"  # the manifest's glue_wheels, comma-separated: staged under the code
DEFAULT_CHECK_INTERVAL = 60
BASE_MODEL_TASKS = ("train_model", "evaluate_model")  # the jobs that load a base model (llm_lora's adapters sit on it)


def require_aws(config: ModelConfig) -> AwsConfig:
    """The model's ``aws:`` section; a ValueError naming the field when it has none."""
    if config.aws is None:
        raise ValueError(f"field 'aws': model {config.name} has no aws section, which RETRAIN_BACKEND=aws needs")
    return config.aws


def code_bundle(aws: AwsConfig) -> CodeBundle:
    """The deployed code this run uses, as startup.sh exports it from the deploy manifest.

    ``RETRAIN_CODE_DIGEST`` locates the code on S3; ``RETRAIN_GIT_SHA`` (else git) is its lineage;
    ``RETRAIN_GLUE_WHEELS`` names the wheels staged with it for Glue.
    """
    sha = os.environ.get(GIT_SHA_ENV, "").strip() or jobs.git_sha()
    if not sha or sha == "unknown" or sha.endswith("-dirty"):
        # Lineage must name a commit that rebuilds the model; a dirty or unknown tree does not.
        raise ValueError(f"{GIT_SHA_ENV}: the deployed git sha is needed for lineage, got {sha!r}")
    digest = os.environ.get(CODE_DIGEST_ENV, "").strip()
    if not digest:
        raise ValueError(
            f"{CODE_DIGEST_ENV}: the deployed code digest is needed to find the code bundle; "
            "startup.sh of `bin/retrain deploy build` exports it (deploy-manifest.json, code_digest)"
        )
    wheels = tuple(name for name in os.environ.get(GLUE_WHEELS_ENV, "").split(",") if name.strip())
    return CodeBundle(layout(aws).bucket_of("code"), sha, digest, wheels)


def lineage(config: ModelConfig, ctx: jobs.RunContext, code: CodeBundle, dataset_version: str | None) -> dict[str, str]:
    """jobs.lineage with the deployed sha and the aws base model: what the AWS job really runs."""
    tags = jobs.lineage(config, ctx, dataset_version)
    tags["git_sha"] = code.git_sha
    tags["base_model"] = config.training.aws_base
    return tags


def aws_job(
    task: str, config: ModelConfig, ctx: jobs.RunContext, code: CodeBundle, champion_store: Any = None
) -> AwsJob:
    """The task's JobSpec mapped onto S3 and container paths (``mapped_job``); a job that loads a base model also
    gets the staged copy of the aws base model (``with_base_model``), since nothing is downloaded in the container."""
    job = mapped_job(task, config, ctx, code, champion_store)
    if task not in BASE_MODEL_TASKS:
        return job
    return with_base_model(job, require_aws(config), config.training.aws_base)


def mapped_job(
    task: str, config: ModelConfig, ctx: jobs.RunContext, code: CodeBundle, champion_store: Any = None
) -> AwsJob:
    """The task's JobSpec mapped onto S3 and container paths.

    ``--store-root`` (``StoreRoot``) spans three buckets on AWS, so aws_job_from_spec refuses it; it becomes:

    - Glue (build_dataset): ``s3://<dataset bucket>`` with ``--artifact-bucket`` and
      ``--golden-bucket``, which the script turns into an S3Store (``retrain.store.store_for``);
    - processing (validate_raw): a store in the container, ``/opt/ml/processing/input/store``,
      with the model's ``raw/<model>/`` prefix mounted at the same key below it, so the job
      reads the snapshot's files by their keys without any S3 call (network isolation allows none).
    """
    aws = require_aws(config)
    spec = jobs.job_spec(task, config, ctx, champion_store)  # the champion comes from the real (S3) ledger
    if task == "train_model":  # what the AWS job really runs: the deployed sha (MWAA has no git), the aws base model
        dataset_version = ctx.upstream["build_dataset"]["dataset_version"]
        env = {**spec.env, "RETRAIN_LINEAGE": json.dumps(lineage(config, ctx, code, dataset_version), sort_keys=True)}
        arguments = {**spec.arguments, "base-model": config.training.aws_base}
        spec = replace(spec, arguments=arguments, env=env)
    if "store-root" not in spec.arguments:
        return aws_job_from_spec(spec, aws, code)
    rest = replace(spec, arguments={k: v for k, v in spec.arguments.items() if k != "store-root"})
    mapped = aws_job_from_spec(rest, aws, code)
    if spec.kind == "glue":
        buckets = {
            "store-root": f"s3://{aws.dataset_bucket}",
            "artifact-bucket": aws.artifact_bucket,
            "golden-bucket": aws.golden_bucket,
            **({"kms-key-arn": aws.kms_key_arn} if aws.kms_key_arn else {}),
        }
        return replace(mapped, arguments={**mapped.arguments, **buckets})
    raw = f"raw/{config.name}"
    return replace(
        mapped,
        arguments={**mapped.arguments, "store-root": str(PROCESSING_INPUT / "store")},
        inputs={**mapped.inputs, "store": s3_uri(aws, raw) + "/"},
        input_paths={**mapped.input_paths, "store": str(PROCESSING_INPUT / "store" / raw)},
    )


def _name(config: ModelConfig, task: str, ctx: jobs.RunContext) -> str:
    return job_name(config.name, task, ctx.run_id, ctx.try_number)


def training_config(config: ModelConfig, ctx: jobs.RunContext, code: CodeBundle) -> dict[str, Any]:
    """The validated CreateTrainingJob request of train_model."""
    job = aws_job("train_model", config, ctx, code)
    dataset_version = ctx.upstream["build_dataset"]["dataset_version"]
    request = sagemaker.training_request(
        config.aws, job, code, _name(config, "train_model", ctx), lineage(config, ctx, code, dataset_version)
    )
    validate_request("sagemaker", "CreateTrainingJob", request)
    return request


def processing_config(
    task: str, config: ModelConfig, ctx: jobs.RunContext, code: CodeBundle, champion_store: Any = None
) -> dict[str, Any]:
    """The validated CreateProcessingJob request of validate_raw or evaluate_model."""
    job = aws_job(task, config, ctx, code, champion_store)
    dataset_version = (ctx.upstream.get("train_model") or {}).get("dataset_version")
    request = sagemaker.processing_request(
        config.aws, job, code, _name(config, task, ctx), lineage(config, ctx, code, dataset_version)
    )
    validate_request("sagemaker", "CreateProcessingJob", request)
    return request


def glue_kwargs(config: ModelConfig, ctx: jobs.RunContext, code: CodeBundle) -> dict[str, Any]:
    """GlueJobOperator keyword arguments of build_dataset; the CreateJob and StartJobRun they imply are validated."""
    aws = require_aws(config)
    job = aws_job("build_dataset", config, ctx, code)
    kwargs = glue.glue_operator_kwargs(
        aws, job, code, glue_job_name(config.name, code.digest), f"{config.dag_id} build_dataset"
    )
    validate_request("glue", "CreateJob", glue.create_job_request(kwargs))
    validate_request("glue", "StartJobRun", glue.start_job_run_request(kwargs))
    return kwargs


def result_uri(task: str, request: dict[str, Any]) -> str:
    """Where a finished job left its result JSON on S3 (the container contract's result file)."""
    if task == "build_dataset":
        return request["script_args"]["--result-file"]
    outputs = {
        o["OutputName"]: o["S3Output"]["S3Uri"] for o in request.get("ProcessingOutputConfig", {}).get("Outputs", [])
    }
    if "output-dir" not in outputs:
        raise ValueError(f"{task}: the request has no output-dir output, so the job leaves no result on S3")
    leaf = "metrics.json" if task == "evaluate_model" else "result.json"
    return f"{outputs['output-dir'].rstrip('/')}/{leaf}"


def evaluation_summary(metrics: dict[str, Any], metrics_uri: str) -> dict[str, Any]:
    """evaluate_model's XCom on aws: jobs.summarize_metrics with S3 URIs in place of local paths."""
    return jobs.summarize_metrics(metrics, metrics_uri)


def model_package_request(config: ModelConfig, ctx: jobs.RunContext, code: CodeBundle) -> dict[str, Any]:
    """The validated CreateModelPackage request of register_model (PendingManualApproval)."""
    aws = require_aws(config)
    trained, evaluated = ctx.upstream["train_model"], ctx.upstream["evaluate_model"]
    request = sagemaker.model_package_request(
        aws,
        aws.inference_image_uri,
        trained["model_data_url"],
        evaluated["metrics_path"],
        lineage(config, ctx, code, trained["dataset_version"]),
        f"{config.name} challenger from {config.dag_id} run {ctx.run_id}",
    )
    validate_request("sagemaker", "CreateModelPackage", request)
    return request


def model_package_arn(aws: AwsConfig, version: int) -> str:
    """ARN of version ``version`` of the model's package group (account from the role ARN)."""
    account = aws.role_arn.split(":")[4]
    partition = aws.role_arn.split(":")[1]
    return f"arn:{partition}:sagemaker:{aws.region}:{account}:model-package/{aws.model_package_group}/{int(version)}"


def update_package_request(aws: AwsConfig, version: int, approved: bool, description: str) -> dict[str, Any]:
    """The validated UpdateModelPackage request that approves or rejects one version."""
    # A reason typed into a form that did not check it (an older DAG version, the REST API) must not strand an approved
    # run: ApprovalDescription is one line of at most 1024 characters.
    request = sagemaker.update_model_package_request(
        model_package_arn(aws, version), approved, one_line(description, limit=1024)
    )
    validate_request("sagemaker", "UpdateModelPackage", request)
    return request


POLL_MARGIN_SECONDS = 1800
"""Beyond the job's own limits: provisioning, the image pull, and the upload of outputs after the script ends."""


def max_attempts(timeout_seconds: int, check_interval: int) -> int:
    """Polls an operator may make before it gives up on a job that may run ``timeout_seconds``, rounded up."""
    if check_interval < 1:
        raise ValueError(f"check_interval: must be >= 1 second, got {check_interval}")
    return max(1, math.ceil(timeout_seconds / check_interval))


def job_timeout_seconds(aws: AwsConfig, task: str) -> int:
    """How long the task's operator polls its job: the job's own limits (Glue's timeout, or SageMaker's max runtime
    plus, for spot training, the max wait for capacity) and ``POLL_MARGIN_SECONDS``. Polling for less marks a job
    that is still running as failed, and the retry then starts a second job on the same checkpoint prefix."""
    if task == "build_dataset":
        return aws.glue.timeout_minutes * 60 + POLL_MARGIN_SECONDS
    if task == "train_model":
        training = aws.training
        wait = training.max_wait_seconds if training.use_spot_instances and training.max_wait_seconds else 0
        return training.max_runtime_seconds + wait + POLL_MARGIN_SECONDS
    return aws.processing.max_runtime_seconds + POLL_MARGIN_SECONDS


def dumps(obj: Any) -> str:
    """Compact JSON for logs."""
    return json.dumps(obj, sort_keys=True, default=str)
