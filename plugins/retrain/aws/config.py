"""The ``aws:`` section of a model config: what the aws backend needs to build Glue, SageMaker and S3 requests.

Each field is validated against the AWS API's own naming rules (ARNs, bucket names, instance types), so a
mistyped value is an error that names the field when the config loads, never a request AWS refuses at run
time. Used at run time only; the local backend never reads it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from retrain.aws.images import check_job_image, registry_region
from retrain.schema import Strict as _Strict


def _fullmatch(pattern: str, what: str):
    """A check that ``value`` fully matches ``pattern``; the error names the rule in words and as a regex."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not {what} (rule: {pattern})")
        return value

    return check


def _matching(pattern: str, what: str):
    """A string type that must fully match ``pattern``."""
    return Annotated[str, AfterValidator(_fullmatch(pattern, what))]


def _s3_bucket(value: str) -> str:
    # S3's naming rules, spelled out because a regex alone reads badly in an error message.
    rules = [
        (3 <= len(value) <= 63, "3 to 63 characters"),
        (
            re.fullmatch(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", value or "-") is not None,
            "only a-z, 0-9, '.' and '-', starting and ending with a letter or digit",
        ),
        (".." not in value and ".-" not in value and "-." not in value, "no '..', '.-' or '-.'"),
        (re.fullmatch(r"\d+\.\d+\.\d+\.\d+", value) is None, "not an IP address"),
        (
            not value.startswith(("xn--", "sthree-")) and not value.endswith(("-s3alias", "--ol-s3")),
            "no reserved prefix or suffix",
        ),
    ]
    broken = [rule for ok, rule in rules if not ok]
    if broken:
        raise ValueError(f"{value!r} is not an S3 bucket name (rule: {'; '.join(broken)})")
    return value


def _quoted_version(value: Any) -> Any:
    # YAML reads an unquoted 5.0 as the float 5.0, and str(5.0) would hide the mistake for "5.10".
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError(f'must be a quoted string such as "5.0"; YAML read {value!r} as a number')
    return value


IAM_ROLE_ARN = _matching(
    r"arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}",
    "an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)",
)
KMS_KEY_ARN = _matching(
    r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/[A-Za-z0-9/_-]{1,256}", "a KMS key or alias ARN"
)
SNS_TOPIC_ARN = _matching(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}", "an SNS topic ARN")
REGION = _matching(r"[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d", "an AWS region such as us-east-1")
ECR_IMAGE_URI = _matching(
    r"\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]{1,128}|@sha256:[0-9a-f]{64})",
    "an ECR image URI (<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>)",
)
JOB_IMAGE_URI = Annotated[str, AfterValidator(check_job_image)]  # retrain-jobs:<lock tag> (retrain.aws.images)
ML_INSTANCE_TYPE = _matching(r"ml\.[a-z0-9]+\.[a-z0-9]+", "a SageMaker instance type such as ml.m5.xlarge")
SAGEMAKER_NAME = _matching(
    r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", "a SageMaker name (letters, digits and '-', at most 63)"
)
MLFLOW_SERVER_ARN = _matching(
    r"arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:mlflow-tracking-server/[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}",
    "a SageMaker MLflow tracking server ARN",
)
S3_BUCKET = Annotated[str, AfterValidator(_s3_bucket)]
SUBNET_ID = _matching(r"subnet-[0-9a-f]{8,17}", "a subnet id (subnet-<hex>)")
SECURITY_GROUP_ID = _matching(r"sg-[0-9a-f]{8,17}", "a security group id (sg-<hex>)")
GLUE_WORKER_TYPE = _matching(r"[A-Z]\.\d+X|Standard", "a Glue worker type such as G.1X")
GLUE_VERSION = Annotated[
    str, BeforeValidator(_quoted_version), AfterValidator(_fullmatch(r"\d+\.\d+", 'a Glue version such as "5.0"'))
]


class VpcConfig(_Strict):
    """Subnets and security groups the SageMaker jobs run in; both empty means no VPC."""

    subnets: list[SUBNET_ID] = Field(default_factory=list, max_length=16, description="Private subnet ids.")
    security_group_ids: list[SECURITY_GROUP_ID] = Field(
        default_factory=list, max_length=5, description="Security group ids."
    )

    @model_validator(mode="after")
    def _both_or_neither(self) -> VpcConfig:
        if bool(self.subnets) != bool(self.security_group_ids):
            raise ValueError("subnets and security_group_ids must both be set or both be empty")
        return self


class GlueJobConfig(_Strict):
    """The Glue Spark job that runs build_dataset."""

    glue_version: GLUE_VERSION = Field(description='Glue version as a quoted string ("5.0"); never a number.')
    worker_type: GLUE_WORKER_TYPE = Field("G.1X", description="Glue worker type.")
    number_of_workers: int = Field(2, ge=2, le=299, description="Workers, the driver included.")
    timeout_minutes: int = Field(60, ge=1, le=2880, description="Glue stops the run after this.")
    max_retries: int = Field(
        0, ge=0, le=10, description="Glue's own retries; Airflow retries the task, so 0 avoids double retries."
    )


class TrainingJobConfig(_Strict):
    """The SageMaker training job (script mode)."""

    image_uri: JOB_IMAGE_URI = Field(
        description="The job image, <account>.dkr.ecr.<region>.amazonaws.com/retrain-jobs:<lock tag> "
        "(`bin/retrain deploy image`)."
    )
    instance_type: ML_INSTANCE_TYPE = Field(description="Training instance type, e.g. ml.m5.xlarge.")
    instance_count: int = Field(1, ge=1, le=64, description="Instances; more than one runs torch distributed.")
    volume_size_gb: int = Field(30, ge=1, le=16384, description="EBS volume per instance.")
    use_spot_instances: bool = Field(False, description="Managed spot training; resumes from the checkpoint S3 URI.")
    max_runtime_seconds: int = Field(3600, ge=1, le=2419200, description="StoppingCondition.MaxRuntimeInSeconds.")
    max_wait_seconds: int | None = Field(
        None, ge=1, le=2419200, description="StoppingCondition.MaxWaitTimeInSeconds; spot only, >= max_runtime_seconds."
    )

    @model_validator(mode="after")
    def _spot_wait(self) -> TrainingJobConfig:
        if self.use_spot_instances:
            if self.max_wait_seconds is None or self.max_wait_seconds < self.max_runtime_seconds:
                raise ValueError("with use_spot_instances, max_wait_seconds must be set and >= max_runtime_seconds")
        elif self.max_wait_seconds is not None:
            raise ValueError("max_wait_seconds applies only with use_spot_instances: true")
        return self


class ProcessingJobConfig(_Strict):
    """The SageMaker processing jobs (validate_raw, evaluate_model)."""

    image_uri: JOB_IMAGE_URI = Field(description="The job image, the same as training.image_uri.")
    instance_type: ML_INSTANCE_TYPE = Field(description="Processing instance type, e.g. ml.m5.xlarge.")
    instance_count: int = Field(1, ge=1, le=100, description="Instances.")
    volume_size_gb: int = Field(30, ge=1, le=16384, description="EBS volume per instance.")
    max_runtime_seconds: int = Field(3600, ge=1, le=604800, description="StoppingCondition.MaxRuntimeInSeconds.")


class EndpointSettings(_Strict):
    """The model's SageMaker real-time endpoint (the deployment stage, ``retrain.aws.endpoints``): what each variant
    runs on. Every variant (champion, canary, shadow) gets the same instances, so the canary's latency is comparable."""

    instance_type: ML_INSTANCE_TYPE = Field("ml.m5.large", description="Instance type of every variant.")
    instance_count: int = Field(1, ge=1, le=10, description="Instances per variant.")
    alarm_period_seconds: int = Field(
        60, ge=60, le=3600, multiple_of=60, description="Period of the variants' CloudWatch alarms (a multiple of 60)."
    )


class AlertsConfig(_Strict):
    """Where failure and rejection alerts go on the aws backend."""

    sns_topic_arn: SNS_TOPIC_ARN | None = Field(None, description="SNS topic for alerts.")
    slack_webhook_conn_id: str | None = Field(
        None, min_length=1, description="Airflow connection id of a Slack webhook."
    )


class AwsConfig(_Strict):
    """What the aws backend needs to build Glue, SageMaker and S3 requests. Used at run time."""

    region: REGION = Field(description="Region of the buckets, jobs and registry.")
    role_arn: IAM_ROLE_ARN = Field(description="Execution role of the Glue and SageMaker jobs.")
    dataset_bucket: S3_BUCKET = Field(description="Bucket of raw/ and datasets/.")
    artifact_bucket: S3_BUCKET = Field(description="Bucket of runs/, ledger/ and the deployed code bundle.")
    golden_bucket: S3_BUCKET = Field(description="Object-Locked bucket of golden/.")
    kms_key_arn: KMS_KEY_ARN | None = Field(
        None, description="KMS key for job volumes, outputs and S3 writes; None = AWS-managed keys."
    )
    vpc: VpcConfig = Field(default_factory=VpcConfig, description="VPC of the SageMaker jobs.")
    enable_network_isolation: bool = Field(
        False,
        description="Training and processing containers get no network, so they cannot reach MLflow or S3 beyond their "
        "inputs.",
    )
    glue: GlueJobConfig = Field(description="The build_dataset Glue job.")
    training: TrainingJobConfig = Field(description="The train_model SageMaker training job.")
    processing: ProcessingJobConfig = Field(description="The validate_raw and evaluate_model processing jobs.")
    model_package_group: SAGEMAKER_NAME = Field(description="SageMaker model package group of this model.")
    inference_image_uri: JOB_IMAGE_URI = Field(
        description="The image of the model's endpoint, recorded in each model package: the job image (the lock the "
        "model was trained and evaluated with), which SageMaker starts as `serve` (include/retrain_serving/hosting.py)."
    )
    mlflow_tracking_server_arn: MLFLOW_SERVER_ARN = Field(
        description="Managed MLflow server; jobs get it as MLFLOW_TRACKING_URI."
    )
    alerts: AlertsConfig = Field(default_factory=AlertsConfig, description="Alert destinations.")
    endpoint: EndpointSettings = Field(
        default_factory=EndpointSettings, description="The model's SageMaker endpoint (deployment stage)."
    )

    @model_validator(mode="after")
    def _images_in_region(self) -> AwsConfig:
        # SageMaker pulls a job's image only from an ECR registry in the job's own region.
        for field, image in (
            ("training.image_uri", self.training.image_uri),
            ("processing.image_uri", self.processing.image_uri),
            ("inference_image_uri", self.inference_image_uri),
        ):
            if registry_region(image) != self.region:
                raise ValueError(f"{field}: its registry is not in region {self.region!r}, where the jobs run")
        return self
