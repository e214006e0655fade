"""The deployment stage's requests on AWS: a SageMaker real-time endpoint per model, CloudWatch alarms per variant.

The shape (docs/serving.md, "On AWS"):

- One endpoint per model, ``retrain-<model>``. Each production variant serves one registry version and is named
  after it (``v3``), so SageMaker's ``InvokedProductionVariant`` names the version that answered every request.
- ``deploy_shadow`` makes one endpoint config per deployment: the champion at weight 1, the challenger at weight 0
  (ready for the canary), and the challenger again as the shadow variant (``shadow-v4``), which gets a copy of each
  request; its answers are never returned. The endpoint is updated to it (``UpdateEndpoint``, blue/green on AWS).
- ``start_canary``, the automatic rollback and the promotion only move weights (``UpdateEndpointWeightsAndCapacities``):
  no instance is replaced, and the endpoint config that serves is never deleted.
- After promotion the endpoint is updated to a config without the shadow variant; the old champion stays as a
  weight-0 variant, so a rollback to it is a weight move (seconds), not a redeploy (minutes).
- Two alarms per variant: the 5XX share of invocations (``Invocation5XXErrors`` / ``Invocations``) and the p99 of
  ``ModelLatency`` (microseconds), at the window's ceilings. The observation windows read the invocation counts and the
  alarms' state.

Plain Python: no Airflow and no boto3. Every request is checked against botocore's service model before it is
returned (``schema.validate_request``), as the jobs' requests are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from retrain.aws.locations import CodeBundle
from retrain.aws.names import MAX_LENGTH, SAGEMAKER_NAME, _slug
from retrain.aws.schema import validate_request
from retrain.config import AwsConfig

NAMESPACE = "AWS/SageMaker"


def endpoint_name(model: str) -> str:
    """The model's endpoint: ``retrain-<model>``."""
    return _bounded(f"retrain-{_slug(model)}", model)


def variant_name(version: int) -> str:
    """The production variant that serves ``version``: ``v<version>``."""
    return f"v{int(version)}"


def shadow_variant_name(version: int) -> str:
    """The shadow variant of ``version``: ``shadow-v<version>``."""
    return f"shadow-v{int(version)}"


def version_of_variant(name: str) -> int | None:
    """The version a variant serves, from its name; None for a name this module did not make."""
    head = name.removeprefix("shadow-")
    return int(head[1:]) if head.startswith("v") and head[1:].isdigit() else None


def model_name(model: str, version: int) -> str:
    """The SageMaker Model of one registry version: ``retrain-<model>-v<version>`` (immutable, made once)."""
    return _bounded(f"retrain-{_slug(model)}-v{int(version)}", f"{model}\0{version}")


def endpoint_config_name(model: str, purpose: str, identity: str) -> str:
    """A new endpoint config's name: ``retrain-<model>-<purpose>-<hash8>``, the hash over ``identity`` (the run and
    what it deploys), since a config is immutable and a name is never reused."""
    digest = hashlib.sha256(f"{model}\0{purpose}\0{identity}".encode()).hexdigest()[:8]
    head = f"retrain-{_slug(model)}-{_slug(purpose)}"[: MAX_LENGTH - 9].rstrip("-")
    return f"{head}-{digest}"


def _bounded(name: str, identity: str) -> str:
    if len(name) <= MAX_LENGTH and SAGEMAKER_NAME.fullmatch(name):
        return name
    digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
    return f"{name[: MAX_LENGTH - 9].rstrip('-')}-{digest}"


def _tags(model: str) -> list[dict[str, str]]:
    return [{"Key": "retrain:model", "Value": model}]


CODE_CHANNEL = "code"
CODE_MOUNT = f"/opt/ml/additional-model-data-sources/{CODE_CHANNEL}"
"""Where SageMaker mounts the Model's ``code`` data source: the deployed code's unpacked tree (no network needed)."""


def model_request(
    aws: AwsConfig, model: str, task: str, version: int, model_data_url: str, weights_digest: str, code: CodeBundle
) -> dict:
    """The validated CreateModel request of one registry version: the job image (started as ``serve``), the version's
    archive, the deployed code as the data source ``code`` (the same tree the jobs run), and what the container checks
    before it serves (``RETRAIN_WEIGHTS_DIGEST``; include/retrain_serving/hosting.py)."""
    request: dict[str, Any] = {
        "ModelName": model_name(model, version),
        "PrimaryContainer": {
            "Image": aws.inference_image_uri,
            "ModelDataUrl": model_data_url,
            "AdditionalModelDataSources": [
                {
                    "ChannelName": CODE_CHANNEL,
                    "S3DataSource": {"S3Uri": code.source_uri, "S3DataType": "S3Prefix", "CompressionType": "None"},
                }
            ],
            "Environment": {
                "RETRAIN_MODEL": model,
                "RETRAIN_VERSION": str(int(version)),
                "RETRAIN_TASK": task,
                "RETRAIN_WEIGHTS_DIGEST": weights_digest,
                "RETRAIN_GIT_SHA": code.git_sha,
                "PYTHONPATH": f"{CODE_MOUNT}/include:{CODE_MOUNT}/plugins",  # as the jobs set it
            },
        },
        "ExecutionRoleArn": aws.role_arn,
        "EnableNetworkIsolation": aws.enable_network_isolation,
        "Tags": _tags(model),
    }
    if aws.vpc.subnets:
        request["VpcConfig"] = {"Subnets": list(aws.vpc.subnets), "SecurityGroupIds": list(aws.vpc.security_group_ids)}
    validate_request("sagemaker", "CreateModel", request)
    return request


def _variant(aws: AwsConfig, model: str, version: int, name: str, weight: float) -> dict[str, Any]:
    return {
        "VariantName": name,
        "ModelName": model_name(model, version),
        "InitialInstanceCount": aws.endpoint.instance_count,
        "InstanceType": aws.endpoint.instance_type,
        "InitialVariantWeight": float(weight),
    }


def endpoint_config_request(
    aws: AwsConfig, model: str, name: str, weights: Mapping[int, float], shadow: int | None = None
) -> dict[str, Any]:
    """The validated CreateEndpointConfig request: a production variant per version in ``weights`` (version ->
    weight), and ``shadow``'s shadow variant when given."""
    if not weights or sum(weights.values()) <= 0:
        raise ValueError(f"{model}: an endpoint config needs a production variant with a weight above 0, got {weights}")
    request: dict[str, Any] = {
        "EndpointConfigName": name,
        "ProductionVariants": [
            _variant(aws, model, version, variant_name(version), weight) for version, weight in sorted(weights.items())
        ],
        "Tags": _tags(model),
    }
    if shadow is not None:
        request["ShadowProductionVariants"] = [_variant(aws, model, shadow, shadow_variant_name(shadow), 1.0)]
    if aws.kms_key_arn:
        request["KmsKeyId"] = aws.kms_key_arn
    validate_request("sagemaker", "CreateEndpointConfig", request)
    return request


def endpoint_request(model: str, config_name: str, create: bool) -> dict[str, Any]:
    """The validated CreateEndpoint (``create``) or UpdateEndpoint request that points the endpoint at a config."""
    request: dict[str, Any] = {"EndpointName": endpoint_name(model), "EndpointConfigName": config_name}
    if create:
        request["Tags"] = _tags(model)
    validate_request("sagemaker", "CreateEndpoint" if create else "UpdateEndpoint", request)
    return request


def weights_request(model: str, weights: Mapping[int, float]) -> dict[str, Any]:
    """The validated UpdateEndpointWeightsAndCapacities request: version -> weight for the named variants."""
    request = {
        "EndpointName": endpoint_name(model),
        "DesiredWeightsAndCapacities": [
            {"VariantName": variant_name(version), "DesiredWeight": float(weight)}
            for version, weight in sorted(weights.items())
        ],
    }
    validate_request("sagemaker", "UpdateEndpointWeightsAndCapacities", request)
    return request


def _dimensions(model: str, variant: str) -> list[dict[str, str]]:
    return [{"Name": "EndpointName", "Value": endpoint_name(model)}, {"Name": "VariantName", "Value": variant}]


def _metric(model: str, variant: str, metric: str, period: int, stat: str) -> dict[str, Any]:
    return {
        "Metric": {"Namespace": NAMESPACE, "MetricName": metric, "Dimensions": _dimensions(model, variant)},
        "Period": period,
        "Stat": stat,
    }


def alarm_names(model: str, variant: str) -> dict[str, str]:
    """The variant's alarms by what they watch: ``error_rate`` and ``p99``."""
    base = f"retrain-{_slug(model)}-{variant}"
    return {"error_rate": f"{base}-error-rate", "p99": f"{base}-p99-latency"}


def alarm_requests(
    aws: AwsConfig, model: str, variant: str, max_error_rate: float, p99_ms_max: float | None
) -> list[dict[str, Any]]:
    """The validated PutMetricAlarm requests of one variant: its 5XX share above ``max_error_rate``, and (when a
    ceiling is set) its p99 ``ModelLatency`` above ``p99_ms_max`` (CloudWatch counts ModelLatency in microseconds).
    Missing data never breaches: a variant without traffic is judged by the window's request count instead."""
    names, period = alarm_names(model, variant), aws.endpoint.alarm_period_seconds
    actions = {"AlarmActions": [aws.alerts.sns_topic_arn]} if aws.alerts.sns_topic_arn else {}
    common = {"EvaluationPeriods": 1, "DatapointsToAlarm": 1, "TreatMissingData": "notBreaching", **actions}
    requests = [
        {
            "AlarmName": names["error_rate"],
            "AlarmDescription": f"retrain {model} {variant}: 5XX share of invocations above {max_error_rate:g}",
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": float(max_error_rate),
            "Metrics": [
                {
                    "Id": "errors",
                    "MetricStat": _metric(model, variant, "Invocation5XXErrors", period, "Sum"),
                    "ReturnData": False,
                },
                {
                    "Id": "invocations",
                    "MetricStat": _metric(model, variant, "Invocations", period, "Sum"),
                    "ReturnData": False,
                },
                {"Id": "share", "Expression": "errors / invocations", "Label": "5XX share", "ReturnData": True},
            ],
            **common,
        }
    ]
    if p99_ms_max is not None:
        requests.append(
            {
                "AlarmName": names["p99"],
                "AlarmDescription": f"retrain {model} {variant}: p99 model latency above {p99_ms_max:g} ms",
                "Namespace": NAMESPACE,
                "MetricName": "ModelLatency",
                "Dimensions": _dimensions(model, variant),
                "ExtendedStatistic": "p99",
                "Period": period,
                "Unit": "Microseconds",
                "ComparisonOperator": "GreaterThanThreshold",
                "Threshold": float(p99_ms_max) * 1000.0,
                **common,
            }
        )
    for request in requests:
        validate_request("cloudwatch", "PutMetricAlarm", request)
    return requests


def invocation_queries(model: str, variant: str, period: int = 60) -> list[dict[str, Any]]:
    """GetMetricData queries of a variant's ``Invocations`` and ``Invocation5XXErrors`` sums, per ``period``."""
    return [
        {"Id": "invocations", "MetricStat": _metric(model, variant, "Invocations", period, "Sum"), "ReturnData": True},
        {
            "Id": "errors",
            "MetricStat": _metric(model, variant, "Invocation5XXErrors", period, "Sum"),
            "ReturnData": True,
        },
    ]


def metric_data_request(model: str, variant: str, start, end, period: int = 60) -> dict[str, Any]:
    """The validated GetMetricData request of a window from ``start`` to ``end`` (datetimes)."""
    request = {"MetricDataQueries": invocation_queries(model, variant, period), "StartTime": start, "EndTime": end}
    validate_request("cloudwatch", "GetMetricData", request)
    return request
