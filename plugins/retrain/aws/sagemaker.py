"""SageMaker requests: CreateTrainingJob, CreateProcessingJob, CreateModelPackage, UpdateModelPackage.

Each builder takes the config, an ``AwsJob`` (or explicit URIs), a job name and the lineage,
and returns the request dict the provider operator or ``SageMakerHook().conn`` sends.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from retrain.aws.config import AwsConfig
from retrain.aws.locations import (
    CHECKPOINT_PATH,
    PROCESSING_CODE,
    PROCESSING_INPUT,
    PROCESSING_OUTPUT,
    AwsJob,
    CodeBundle,
)

CODE_DIR = "/opt/ml/code"  # where script mode unpacks sagemaker_submit_directory
# The code reaches training as an input channel, and the toolkit unpacks it from the local file: no S3 call of its
# own, so it works with network isolation too (as the SageMaker SDK does when isolation is on).
CODE_CHANNEL = "code"
SUBMIT_DIRECTORY = f"/opt/ml/input/data/{CODE_CHANNEL}/sourcedir.tar.gz"
LINEAGE_KEYS = (
    "dataset_version",
    "golden_version",
    "base_model",
    "git_sha",
    "config_digest",
    "airflow_dag_id",
    "airflow_run_id",
)
# Tag values allow letters, digits, spaces and _.:/=+-@ ({L}{Z}{N} in SageMaker's Java pattern).
_TAG_FORBIDDEN = re.compile(r"[^\w\s.:/=+\-@]")


def _strings(values: dict[str, Any], field: str) -> dict[str, str]:
    bad = {key: type(value).__name__ for key, value in values.items() if not isinstance(value, str)}
    if bad:
        listed = ", ".join(f"{key} ({kind})" for key, kind in bad.items())
        raise TypeError(f"{field}: every value must be a string; not strings: {listed}")
    return dict(values)


def _tags(lineage: dict[str, str]) -> list[dict[str, str]]:
    # Tags are for search and cost reports; the exact lineage sits in the model package's metadata.
    return [
        {"Key": f"retrain:{key}", "Value": _TAG_FORBIDDEN.sub("_", str(value))[:256]}
        for key, value in sorted(lineage.items())
    ]


def _vpc(aws: AwsConfig) -> dict[str, Any] | None:
    if not aws.vpc.subnets:
        return None
    return {"SecurityGroupIds": list(aws.vpc.security_group_ids), "Subnets": list(aws.vpc.subnets)}


def _with_kms(block: dict[str, Any], key: str, aws: AwsConfig) -> dict[str, Any]:
    return {**block, key: aws.kms_key_arn} if aws.kms_key_arn else block


def training_request(
    aws: AwsConfig, job: AwsJob, code: CodeBundle, name: str, lineage: dict[str, str]
) -> dict[str, Any]:
    """``CreateTrainingJob`` in script mode on the job image: ``job.arguments`` are the hyperparameters, ``job.inputs``
    the channels, and the code comes as the ``code`` channel that ``sagemaker_submit_directory`` points into."""
    if job.kind != "training" or not job.model_uri:
        raise ValueError(f"{job.task}: a training request needs a training job with a model_uri")
    if CODE_CHANNEL in job.inputs:
        raise ValueError(f"{job.task}: channel {CODE_CHANNEL!r} is the job code's; name the data channel otherwise")
    training = aws.training
    hyperparameters = _strings(job.arguments, "HyperParameters")
    hyperparameters.update(
        {
            "sagemaker_program": job.script,  # relative to the unpacked project tree
            "sagemaker_submit_directory": SUBMIT_DIRECTORY,
            "sagemaker_region": aws.region,
        }
    )
    channels = {CODE_CHANNEL: code.sourcedir_uri, **job.inputs}
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "RoleArn": aws.role_arn,
        "AlgorithmSpecification": {"TrainingImage": training.image_uri, "TrainingInputMode": "File"},
        "HyperParameters": hyperparameters,
        "InputDataConfig": [
            {
                "ChannelName": channel,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": "File",
            }
            for channel, uri in channels.items()
        ],
        "OutputDataConfig": _with_kms({"S3OutputPath": job.model_uri}, "KmsKeyId", aws),
        "ResourceConfig": _with_kms(
            {
                "InstanceType": training.instance_type,
                "InstanceCount": training.instance_count,
                "VolumeSizeInGB": training.volume_size_gb,
            },
            "VolumeKmsKeyId",
            aws,
        ),
        "StoppingCondition": {"MaxRuntimeInSeconds": training.max_runtime_seconds},
        "EnableManagedSpotTraining": training.use_spot_instances,
        "EnableNetworkIsolation": aws.enable_network_isolation,
        "Environment": {
            **_strings(job.env, "Environment"),
            "MLFLOW_TRACKING_URI": aws.mlflow_tracking_server_arn,
            "PYTHONPATH": f"{CODE_DIR}/include:{CODE_DIR}/plugins",  # as the local runner sets it
        },
        "Tags": _tags(lineage),
    }
    if training.use_spot_instances:
        request["StoppingCondition"]["MaxWaitTimeInSeconds"] = training.max_wait_seconds
    if job.checkpoint_uri:
        # One checkpoint prefix per run, not per try: a retried or interrupted job resumes from it.
        request["CheckpointConfig"] = {"S3Uri": job.checkpoint_uri, "LocalPath": CHECKPOINT_PATH}
    if (vpc := _vpc(aws)) is not None:
        request["VpcConfig"] = vpc
    return request


def _container_arguments(arguments: dict[str, str]) -> list[str]:
    flat: list[str] = []
    for key, value in _strings(arguments, "AppSpecification.ContainerArguments").items():
        flat += [f"--{key}", value]
    return flat


def processing_request(
    aws: AwsConfig, job: AwsJob, code: CodeBundle, name: str, lineage: dict[str, str]
) -> dict[str, Any]:
    """``CreateProcessingJob``: the project tree and ``job.inputs`` under /opt/ml/processing/input, outputs to S3."""
    if job.kind != "processing":
        raise ValueError(f"{job.task}: a {job.kind} job is not a processing job")
    processing = aws.processing
    inputs = {"code": code.source_uri, **job.inputs}
    request: dict[str, Any] = {
        "ProcessingJobName": name,
        "RoleArn": aws.role_arn,
        "ProcessingResources": {
            "ClusterConfig": _with_kms(
                {
                    "InstanceCount": processing.instance_count,
                    "InstanceType": processing.instance_type,
                    "VolumeSizeInGB": processing.volume_size_gb,
                },
                "VolumeKmsKeyId",
                aws,
            )
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": processing.max_runtime_seconds},
        "AppSpecification": {
            "ImageUri": processing.image_uri,
            "ContainerEntrypoint": ["python3", f"{PROCESSING_CODE}/{job.script}"],
        },
        "ProcessingInputs": [
            {
                "InputName": input_name,
                "S3Input": {
                    "S3Uri": uri,
                    "LocalPath": job.input_paths.get(input_name, str(PROCESSING_INPUT / input_name)),
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                    "S3DataDistributionType": "FullyReplicated",
                },
            }
            for input_name, uri in inputs.items()
        ],
        "Environment": {
            **_strings(job.env, "Environment"),
            "MLFLOW_TRACKING_URI": aws.mlflow_tracking_server_arn,
            "PYTHONPATH": f"{PROCESSING_CODE}/include:{PROCESSING_CODE}/plugins",
        },
        "NetworkConfig": {"EnableNetworkIsolation": aws.enable_network_isolation},
        "Tags": _tags(lineage),
    }
    if arguments := _container_arguments(job.arguments):
        request["AppSpecification"]["ContainerArguments"] = arguments  # the API refuses an empty list
    if job.outputs:
        request["ProcessingOutputConfig"] = _with_kms(
            {
                "Outputs": [
                    {
                        "OutputName": output_name,
                        "S3Output": {
                            "S3Uri": uri,
                            "LocalPath": str(PROCESSING_OUTPUT / output_name),
                            "S3UploadMode": "EndOfJob",
                        },
                    }
                    for output_name, uri in job.outputs.items()
                ]
            },
            "KmsKeyId",
            aws,
        )
    if (vpc := _vpc(aws)) is not None:
        request["NetworkConfig"]["VpcConfig"] = vpc
    return request


def model_package_request(
    aws: AwsConfig, image_uri: str, model_data_url: str, metrics_uri: str, lineage: dict[str, str], description: str
) -> dict[str, Any]:
    """``CreateModelPackage`` in the model's group, PendingManualApproval, with lineage and metrics.json as
    ModelMetrics."""
    missing = [key for key in LINEAGE_KEYS if not lineage.get(key)]
    if missing:  # a package must be rebuildable from its metadata alone (docs/operations.md, lineage)
        raise ValueError(f"CustomerMetadataProperties: lineage is missing {', '.join(missing)}")
    metadata = _strings(lineage, "CustomerMetadataProperties")
    request = {
        "ModelPackageGroupName": aws.model_package_group,
        "ModelPackageDescription": description,
        "ModelApprovalStatus": "PendingManualApproval",
        "InferenceSpecification": {
            "Containers": [{"Image": image_uri, "ModelDataUrl": model_data_url}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        "ModelMetrics": {"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": metrics_uri}}},
        "MetadataProperties": {
            "CommitId": lineage["git_sha"],
            "GeneratedBy": f"{lineage['airflow_dag_id']}/{lineage['airflow_run_id']}",
        },
        "CustomerMetadataProperties": metadata,
    }
    # The token is the request's content: a retried register_model sends the same request under the same token and
    # gets its package back, instead of a second one; a different request (after "clear evaluate_model and
    # downstream", the metrics and description differ) gets a new token, since AWS answers a token reused for other
    # content with an error.
    request["ClientToken"] = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:32]
    return request


def update_model_package_request(package_arn: str, approved: bool, description: str) -> dict[str, Any]:
    """``UpdateModelPackage`` to Approved (promote) or Rejected (reject, rollback of a bad version)."""
    return {
        "ModelPackageArn": package_arn,
        "ModelApprovalStatus": "Approved" if approved else "Rejected",
        "ApprovalDescription": description,
    }
