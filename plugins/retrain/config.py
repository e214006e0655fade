"""Validated per-model configuration.

One YAML file per model lives in ``config/models/<model>.yaml``. The schema keeps
what shapes the DAG at parse time (``schedule``, ``dag``, ``backend``) apart from
what the jobs need at run time (``data``, ``training.hyperparameters``,
``evaluation``). Plain Python: no Airflow import, so jobs and tests reuse it.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from retrain.intervals import WEEKDAYS, Calendar
from retrain.paths import PROJECT_ROOT
from retrain.paths import config_dir as current_config_dir
from retrain.tasks import TASK_TYPES, UnknownTask, check_task, headline_metrics

CADENCE_CRON = {
    "weekly": "0 0 * * {weekday}",  # 00:00 UTC on the config's weekday (cron: 0 = Sunday): intervals span one week
    "monthly": "0 0 1 * *",  # the 1st to the next 1st
    "quarterly": "0 0 1 */3 *",  # 1 January, April, July, October to the next
}


class ConfigError(ValueError):
    """A model config is missing or invalid; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleConfig(_Strict):
    """When the DAG runs. Shapes the DAG at parse time."""

    cadence: Literal["weekly", "monthly", "quarterly"] = Field(description="Run cadence; each run's data interval spans one period.")
    start_date: date = Field(description="First data interval start (UTC).")
    catchup: bool = Field(False, description="Whether the scheduler creates runs for past intervals on unpause.")
    weekday: Literal[WEEKDAYS] = Field(
        "monday", description="Weekly cadence only: the day (00:00 UTC) each weekly interval starts and ends, so "
                              "weekly models can be staggered across the week.")

    @model_validator(mode="after")
    def _weekday_is_weekly(self) -> ScheduleConfig:
        if self.weekday != "monday" and self.cadence != "weekly":
            raise ValueError(f"weekday applies to the weekly cadence only; a {self.cadence} interval starts on the 1st")
        return self

    @property
    def calendar(self) -> Calendar:
        """The interval calendar (retrain.intervals) this schedule cuts."""
        return Calendar(self.cadence, WEEKDAYS.index(self.weekday))


class DagConfig(_Strict):
    """Operational settings of the DAG. Shapes the DAG at parse time."""

    owner: str = Field(description="Team or person who owns the model's DAG.")
    tags: list[str] = Field(default_factory=list, description="Extra DAG tags; 'retrain' and the model name are always added.")
    max_active_runs: int = Field(1, ge=1, description="Concurrent runs; 1 keeps dataset versions in order.")
    retries: int = Field(2, ge=0, description="Retries for job tasks (ETL, train, evaluate).")
    retry_delay_seconds: int = Field(30, ge=1, description="First retry delay; doubles each retry (exponential backoff).")
    max_retry_delay_seconds: int = Field(600, ge=1, description="Ceiling on the backoff delay.")
    job_timeout_minutes: int = Field(120, ge=1, description="execution_timeout of each job task.")


class DataConfig(_Strict):
    """What raw data looks like and how the curated dataset is built. Used at run time."""

    text_column: str = Field("text", description="Raw column holding the input text.")
    label_column: str = Field("label", description="Raw column holding the label.")
    labels_file: str = Field(description="JSON list of allowed labels, relative to the project root.")
    corpus_file: str | None = Field(
        None, description="Retrieval-shaped tasks: JSON lines {passage_id, text}, relative to the project root. The labels are "
        "passage ids; the training job receives the corpus as --corpus-file and the deploy bundle carries it like the labels file.")
    min_rows: int = Field(1, ge=1, description="Fewest rows the snapshot may hold before validation fails.")
    min_text_chars: int = Field(1, ge=1, description="Shortest allowed text after stripping whitespace.")
    max_text_chars: int = Field(1000, ge=1, description="Longest allowed text.")
    validation_fraction: float = Field(0.1, gt=0, lt=1, description="Share of keys hashed into the validation split.")
    golden_version: str = Field(description="Pinned immutable golden set version used by evaluation.")
    golden_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="Pinned content hash of that golden version; evaluation refuses any other content.")
    drift_threshold: float = Field(0.05, ge=0, le=1, description="Below this drift score, training is skipped when a champion exists.")

    @model_validator(mode="after")
    def _bounds(self) -> DataConfig:
        if self.min_text_chars > self.max_text_chars:
            raise ValueError("min_text_chars must not exceed max_text_chars")
        return self

    def files(self) -> list[str]:
        """The project-relative data files a job needs beside the dataset (the labels file, and the corpus if any)."""
        return [self.labels_file] + ([self.corpus_file] if self.corpus_file else [])

    def labels(self) -> list[str]:
        """The allowed labels, in file order (the label index order)."""
        path = PROJECT_ROOT / self.labels_file
        return list(json.loads(path.read_text()))


class TrainingConfig(_Strict):
    """The training job: base model and the hyperparameters handed to the script."""

    base_model: str = Field(description="Local base model name (packaged weights or a config-built model).")
    aws_base_model: str | None = Field(None, description="Base model on the aws backend.")
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="Passed to the training script as --key value.")

    @field_validator("hyperparameters")
    @classmethod
    def _scalars_only(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if not isinstance(item, (str, int, float, bool)):
                raise ValueError(f"hyperparameter {key!r} must be a scalar, got {type(item).__name__}")
            if isinstance(item, str) and ("\n" in item or "\r" in item):
                raise ValueError(f"hyperparameter {key!r} holds a line break; hyperparameters are single-line strings "
                                 "(SageMaker's CreateTrainingJob refuses one): write it as \\n, which the job reads as a line break")
        return value


class LatencyProtocol(_Strict):
    """The fixed latency protocol: batch size 1, a warm-up, a fixed request count and thread count."""

    requests: int = Field(200, ge=10, description="Timed single-example requests.")
    warmup: int = Field(20, ge=0, description="Untimed requests first.")
    threads: int = Field(1, ge=1, description="torch intra-op threads while timing.")


class EvaluationConfig(_Strict):
    """The evaluation job."""

    batch_size: int = Field(64, ge=1, description="Batch size for scoring the golden set.")
    latency: LatencyProtocol = Field(default_factory=LatencyProtocol, description="Latency measurement protocol.")
    escalation_label: str | None = Field(
        None, description="text_classification: the label whose prediction escalates to a person (sentiment: negative); "
                          "evaluation then reports the false-escalation rate.")

    def task_options(self) -> dict[str, Any]:
        """The task-specific evaluation options that are set, handed to the evaluation job as JSON."""
        return {} if self.escalation_label is None else {"escalation_label": self.escalation_label}


class SignificancePolicy(_Strict):
    """Paired bootstrap of (challenger − champion) macro F1: its lower bound must clear the margin."""

    margin: float = Field(-0.01, ge=-1, le=1, description="Lowest acceptable CI lower bound; negative = non-inferiority.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Two-sided confidence level of the interval.")
    resamples: int = Field(2000, ge=1000, description="Bootstrap resamples (at least 1,000).")
    seed: int = Field(0, description="Seed of the resampling, so a verdict can be reproduced.")


class FalseEscalationPolicy(_Strict):
    """The false-escalation rate (examples not of the escalation label predicted as it): a ceiling, and its ratio to the champion's."""

    max_rate: float = Field(ge=0, le=1, description="Ceiling on the challenger's false-escalation rate.")
    max_ratio: float = Field(1.15, ge=1, description="The challenger's rate may be at most this times the champion's, beyond noise.")
    alpha: float = Field(0.05, gt=0, lt=1, description="Level of the paired one-sided exact test that the ratio is exceeded.")


class RetrievalPolicy(_Strict):
    """embedding_adapter: which metric the paired bootstrap over queries judges, and the gain the adapter must
    keep over the frozen encoder it sits on (else serving the frozen encoder would do as well)."""

    significance_metric: str = Field("ndcg_at_10", description="Headline metric whose Δ against the champion the paired "
                                                               "bootstrap over queries judges (gate.significance).")
    min_delta_vs_frozen: dict[str, float] = Field(default_factory=dict, description="challenger − frozen encoder must be >= "
                                                                                    "this, per headline metric; applies without a champion too.")

    def named_metrics(self) -> set[str]:
        return {self.significance_metric, *self.min_delta_vs_frozen}


class RerankingPolicy(_Strict):
    """cross_encoder_reranking: the gain the reranker must keep over the first-stage order of the same fixed
    candidates (else serving the first stage alone would do), and the metric of the paired bootstrap over queries."""

    significance_metric: str = Field("ndcg_at_10", description="Headline metric whose Δ the paired bootstrap over queries judges: "
                                                               "against the champion (gate.significance), and against the first stage "
                                                               "when first_stage_margin is set.")
    min_uplift_vs_first_stage: dict[str, float] = Field(default_factory=dict, description="challenger − first-stage order must be >= "
                                                                                          "this, per headline metric; applies without a champion too.")
    first_stage_margin: float | None = Field(None, ge=-1, le=1, description="If set, the lower bound of the paired bootstrap CI over "
                                                                            "queries of Δ significance_metric against the first stage must be >= this.")

    def named_metrics(self) -> set[str]:
        return {self.significance_metric, *self.min_uplift_vs_first_stage}


class GenerationPolicy(_Strict):
    """causal_lm_lora: the gain the adapter must keep over the base model it sits on, non-inferiority against the champion
    on format exact-match by a paired exact McNemar test over golden prompts, and perplexity limits."""

    min_gain_vs_base: float = Field(0.0, ge=-1, le=1, description="challenger − base model (no adapter) format exact-match must be "
                                                                  ">= this; applies without a champion too.")
    alpha: float = Field(0.05, gt=0, lt=1, description="Level of the one-sided exact McNemar test over golden prompts that the champion "
                                                       "matches the format more often; the challenger fails when the test rejects.")
    max_perplexity: float | None = Field(None, gt=1, description="Ceiling of the challenger's perplexity on the golden responses.")
    max_perplexity_ratio: float | None = Field(None, ge=1, description="challenger / champion perplexity on the golden responses must be <= this.")
    max_text_perplexity_ratio_vs_base: float | None = Field(
        None, ge=1, description="challenger / base model perplexity on held-out plain text must be <= this (forgetting).")

    def named_metrics(self) -> set[str]:
        return {"format_exact_match"}  # the metric its gain, McNemar and champion criteria judge


class GatePolicy(_Strict):
    """What a challenger must satisfy before it may be registered."""

    min_total_examples: int = Field(100, ge=1, description="Fewest golden examples the verdict may rest on.")
    min_class_support: int = Field(10, ge=1, description="Per-class criteria judge only classes with this many golden examples.")
    floors: dict[str, float] = Field(default_factory=dict, description="Absolute minimums of the challenger's headline metrics (the task type's).")
    min_delta: dict[str, float] = Field(default_factory=dict, description="challenger − champion must be >= this; negative allows non-inferiority.")
    per_class_floor: float = Field(0.0, ge=0, le=1, description="Lowest F1 any judged class may have, beyond sampling noise (see per_class_alpha).")
    per_class_max_regression: float = Field(1.0, ge=0, le=1, description="Largest F1 drop against the champion any judged class may have, beyond sampling noise (see per_class_alpha).")
    per_class_alpha: float = Field(0.05, gt=0, lt=1, description="Family-wise error rate of each per-class family (floor, regression): a class fails only if past its limit and its exact test survives step-down Tarone–Holm at this level.")
    latency_p50_ms_max: float = Field(float("inf"), gt=0, description="Ceiling of median single-request latency.")
    latency_p99_ms_max: float = Field(float("inf"), gt=0, description="Ceiling of p99 single-request latency.")
    significance: SignificancePolicy = Field(default_factory=SignificancePolicy)
    false_escalation: FalseEscalationPolicy | None = Field(
        None, description="text_classification with evaluation.escalation_label: ceiling and champion ratio of the false-escalation rate.")

    retrieval: RetrievalPolicy | None = Field(
        None, description="embedding_adapter: the metric of the paired bootstrap over queries, and the gain over the frozen encoder.")
    reranking: RerankingPolicy | None = Field(
        None, description="cross_encoder_reranking: the uplift over the first-stage order, and the metric of the paired bootstrap.")
    generation: GenerationPolicy | None = Field(
        None, description="causal_lm_lora: gain over the base model, McNemar non-inferiority against the champion, perplexity limits.")

    def unset_optional_sections(self) -> set[str] | None:
        """Optional sections left unset: left out of dumps, so policies that do not use them keep their digests."""
        return {name for name in ("false_escalation", "retrieval", "reranking", "generation") if getattr(self, name) is None} or None


class SampleDataConfig(_Strict):
    """Sample data that ``seed`` lands for this model (paths relative to the project root, or absolute)."""

    raw: str = Field(description="CSV of labelled examples, spread over raw partitions by a hash of the text.")
    golden: str = Field(description="CSV published as the golden version named by data.golden_version.")
    partitions: int = Field(6, ge=1, le=60, description="Consecutive data intervals the raw rows are spread over.")
    source_notes: str = Field("", description="Where the sample comes from; its SOURCE.md sits beside the files.")

    def path(self, which: str) -> Path:
        """Absolute path of the raw or golden file."""
        return PROJECT_ROOT / getattr(self, which)


class ApprovalConfig(_Strict):
    """Who may approve a challenger and how long they have."""

    assigned_users: list[str] = Field(min_length=1, description="Airflow user ids allowed to approve or reject.")
    response_timeout_hours: float = Field(168, gt=0, description="After this, the request counts as rejected (default 7 days).")
    rollback_users: list[str] = Field(default_factory=list, description="Airflow users allowed to roll back (a production change); empty = the assigned approvers.")
    fab_user_ids: dict[str, str] = Field(
        default_factory=dict,
        description="Under the FAB auth manager (MWAA), each assigned user name -> its numeric FAB user id: FAB matches approvers by id, never by name.")

    @field_validator("fab_user_ids", mode="before")
    @classmethod
    def _numeric_ids(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        # YAML reads an unquoted 7 as an int; FAB's User.get_id() is the string "7".
        ids = {user: str(uid) if isinstance(uid, int) and not isinstance(uid, bool) else uid for user, uid in value.items()}
        bad = [f"{user}: {uid!r}" for user, uid in ids.items() if not (isinstance(uid, str) and re.fullmatch(r"[1-9]\d*", uid))]
        if bad:
            raise ValueError(f"FAB user ids are positive integers such as 7; not ids: {', '.join(bad)}")
        return ids

    @model_validator(mode="after")
    def _ids_for_approvers_only(self) -> ApprovalConfig:
        unknown = sorted(set(self.fab_user_ids) - set(self.assigned_users) - set(self.rollback_users))
        if unknown:
            raise ValueError(f"fab_user_ids names users who are neither assigned_users nor rollback_users: {', '.join(unknown)}")
        return self

    def approvers(self, by_fab_id: bool) -> list[dict[str, str]]:
        """HITL ``assigned_users``: ``{"id", "name"}`` per approver; the id is the FAB user id when ``by_fab_id``."""
        if not by_fab_id:
            return [{"id": user, "name": user} for user in self.assigned_users]
        missing = [user for user in self.assigned_users if user not in self.fab_user_ids]
        if missing:
            raise ValueError(f"field 'approval.fab_user_ids': no FAB user id for {', '.join(missing)}; under the FAB auth manager "
                             "approvers are matched by numeric id (see README, 'Approval on MWAA')")
        return [{"id": self.fab_user_ids[user], "name": user} for user in self.assigned_users]

    def may_roll_back(self, user: str | None) -> bool:
        """Whether ``user`` may move the champion back."""
        return bool(user) and user in (self.rollback_users or self.assigned_users)

    def rollback_refusal(self, model: str, user: str | None) -> str:
        """Why ``user`` may not roll back ``model``, naming who may."""
        allowed = ", ".join(self.rollback_users or self.assigned_users)
        return (f"{user or 'an unknown user'} may not roll back {model}: a rollback is a production change, allowed to "
                f"{allowed} (approval.rollback_users, else approval.assigned_users); nothing was changed")


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
        (re.fullmatch(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", value or "-") is not None, "only a-z, 0-9, '.' and '-', starting and ending with a letter or digit"),
        (".." not in value and ".-" not in value and "-." not in value, "no '..', '.-' or '-.'"),
        (re.fullmatch(r"\d+\.\d+\.\d+\.\d+", value) is None, "not an IP address"),
        (not value.startswith(("xn--", "sthree-")) and not value.endswith(("-s3alias", "--ol-s3")), "no reserved prefix or suffix"),
    ]
    broken = [rule for ok, rule in rules if not ok]
    if broken:
        raise ValueError(f"{value!r} is not an S3 bucket name (rule: {'; '.join(broken)})")
    return value


def _quoted_version(value: Any) -> Any:
    # YAML reads an unquoted 5.0 as the float 5.0, and str(5.0) would hide the mistake for "5.10".
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError(f"must be a quoted string such as \"5.0\"; YAML read {value!r} as a number")
    return value


IAM_ROLE_ARN = _matching(r"arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}", "an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)")
KMS_KEY_ARN = _matching(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/[A-Za-z0-9/_-]{1,256}", "a KMS key or alias ARN")
SNS_TOPIC_ARN = _matching(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}", "an SNS topic ARN")
REGION = _matching(r"[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d", "an AWS region such as us-east-1")
ECR_IMAGE_URI = _matching(r"\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]{1,128}|@sha256:[0-9a-f]{64})",
                          "an ECR image URI (<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>)")
ML_INSTANCE_TYPE = _matching(r"ml\.[a-z0-9]+\.[a-z0-9]+", "a SageMaker instance type such as ml.m5.xlarge")
SAGEMAKER_NAME = _matching(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", "a SageMaker name (letters, digits and '-', at most 63)")
MLFLOW_SERVER_ARN = _matching(r"arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:mlflow-tracking-server/[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}",
                              "a SageMaker MLflow tracking server ARN")
S3_BUCKET = Annotated[str, AfterValidator(_s3_bucket)]
SUBNET_ID = _matching(r"subnet-[0-9a-f]{8,17}", "a subnet id (subnet-<hex>)")
SECURITY_GROUP_ID = _matching(r"sg-[0-9a-f]{8,17}", "a security group id (sg-<hex>)")
GLUE_WORKER_TYPE = _matching(r"[A-Z]\.\d+X|Standard", "a Glue worker type such as G.1X")
GLUE_VERSION = Annotated[str, BeforeValidator(_quoted_version), AfterValidator(_fullmatch(r"\d+\.\d+", 'a Glue version such as "5.0"'))]


class VpcConfig(_Strict):
    """Subnets and security groups the SageMaker jobs run in; both empty means no VPC."""

    subnets: list[SUBNET_ID] = Field(default_factory=list, max_length=16, description="Private subnet ids.")
    security_group_ids: list[SECURITY_GROUP_ID] = Field(default_factory=list, max_length=5, description="Security group ids.")

    @model_validator(mode="after")
    def _both_or_neither(self) -> VpcConfig:
        if bool(self.subnets) != bool(self.security_group_ids):
            raise ValueError("subnets and security_group_ids must both be set or both be empty")
        return self


class GlueJobConfig(_Strict):
    """The Glue Spark job that runs build_dataset."""

    glue_version: GLUE_VERSION = Field(description="Glue version as a quoted string (\"5.0\"); never a number.")
    worker_type: GLUE_WORKER_TYPE = Field("G.1X", description="Glue worker type.")
    number_of_workers: int = Field(2, ge=2, le=299, description="Workers, the driver included.")
    timeout_minutes: int = Field(60, ge=1, le=2880, description="Glue stops the run after this.")
    max_retries: int = Field(0, ge=0, le=10, description="Glue's own retries; Airflow retries the task, so 0 avoids double retries.")


class TrainingJobConfig(_Strict):
    """The SageMaker training job (script mode)."""

    image_uri: ECR_IMAGE_URI = Field(description="Training image; resolved by the deploy tool, not at parse time.")
    instance_type: ML_INSTANCE_TYPE = Field(description="Training instance type, e.g. ml.m5.xlarge.")
    instance_count: int = Field(1, ge=1, le=64, description="Instances; more than one runs torch distributed.")
    volume_size_gb: int = Field(30, ge=1, le=16384, description="EBS volume per instance.")
    use_spot_instances: bool = Field(False, description="Managed spot training; resumes from the checkpoint S3 URI.")
    max_runtime_seconds: int = Field(3600, ge=1, le=2419200, description="StoppingCondition.MaxRuntimeInSeconds.")
    max_wait_seconds: int | None = Field(None, ge=1, le=2419200, description="StoppingCondition.MaxWaitTimeInSeconds; spot only, >= max_runtime_seconds.")

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

    image_uri: ECR_IMAGE_URI = Field(description="Processing image with the job environment's packages.")
    instance_type: ML_INSTANCE_TYPE = Field(description="Processing instance type, e.g. ml.m5.xlarge.")
    instance_count: int = Field(1, ge=1, le=100, description="Instances.")
    volume_size_gb: int = Field(30, ge=1, le=16384, description="EBS volume per instance.")
    max_runtime_seconds: int = Field(3600, ge=1, le=604800, description="StoppingCondition.MaxRuntimeInSeconds.")


class AlertsConfig(_Strict):
    """Where failure and rejection alerts go on the aws backend."""

    sns_topic_arn: SNS_TOPIC_ARN | None = Field(None, description="SNS topic for alerts.")
    slack_webhook_conn_id: str | None = Field(None, min_length=1, description="Airflow connection id of a Slack webhook.")


class AwsConfig(_Strict):
    """What the aws backend needs to build Glue, SageMaker and S3 requests. Used at run time."""

    region: REGION = Field(description="Region of the buckets, jobs and registry.")
    role_arn: IAM_ROLE_ARN = Field(description="Execution role of the Glue and SageMaker jobs.")
    dataset_bucket: S3_BUCKET = Field(description="Bucket of raw/ and datasets/.")
    artifact_bucket: S3_BUCKET = Field(description="Bucket of runs/, ledger/ and the deployed code bundle.")
    golden_bucket: S3_BUCKET = Field(description="Object-Locked bucket of golden/.")
    kms_key_arn: KMS_KEY_ARN | None = Field(None, description="KMS key for job volumes, outputs and S3 writes; None = AWS-managed keys.")
    vpc: VpcConfig = Field(default_factory=VpcConfig, description="VPC of the SageMaker jobs.")
    enable_network_isolation: bool = Field(False, description="Training and processing containers get no network, so they cannot reach MLflow or S3 beyond their inputs.")
    glue: GlueJobConfig = Field(description="The build_dataset Glue job.")
    training: TrainingJobConfig = Field(description="The train_model SageMaker training job.")
    processing: ProcessingJobConfig = Field(description="The validate_raw and evaluate_model processing jobs.")
    model_package_group: SAGEMAKER_NAME = Field(description="SageMaker model package group of this model.")
    inference_image_uri: ECR_IMAGE_URI = Field(description="Serving image recorded in each model package.")
    mlflow_tracking_server_arn: MLFLOW_SERVER_ARN = Field(description="Managed MLflow server; jobs get it as MLFLOW_TRACKING_URI.")
    alerts: AlertsConfig = Field(default_factory=AlertsConfig, description="Alert destinations.")


class ModelConfig(_Strict):
    """Everything about one model's retraining pipeline."""

    name: str = Field(description="Model name; the DAG id is retrain_<name>.")
    task: str = Field(description=f"Task type; selects the training, evaluation, metrics and gate criteria ({', '.join(TASK_TYPES)}).")
    description: str = Field("", description="Shown as the DAG's description.")
    schedule: ScheduleConfig
    dag: DagConfig
    data: DataConfig
    training: TrainingConfig
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    gate: GatePolicy = Field(default_factory=GatePolicy)
    approval: ApprovalConfig
    sample_data: SampleDataConfig | None = Field(None, description="Sample data for `seed` and the demo; absent in production configs.")
    aws: AwsConfig | None = Field(None, description="Settings of the aws backend; absent for local-only models.")

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not value.isidentifier() or value.lower() != value:
            raise ValueError("must be a lower-case identifier such as 'intent'")
        return value

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        try:
            return check_task(value)
        except UnknownTask as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _task_fits(self) -> ModelConfig:
        metrics = headline_metrics(self.task)
        for section in ("floors", "min_delta"):
            unknown = sorted(set(getattr(self.gate, section)) - set(metrics))
            if unknown:
                raise ValueError(f"gate.{section} names {unknown}, not headline metrics of task {self.task!r} ({', '.join(metrics)})")
        for section in ("retrieval", "reranking", "generation"):  # the task sections' own metric names
            rule = getattr(self.gate, section)
            unknown = sorted(rule.named_metrics() - set(metrics)) if rule is not None else []
            if unknown:
                raise ValueError(f"gate.{section} names {unknown}, not headline metrics of task {self.task!r} ({', '.join(metrics)})")
        if self.gate.false_escalation is not None and self.evaluation.escalation_label is None:
            raise ValueError("gate.false_escalation needs evaluation.escalation_label: the label whose prediction escalates")
        return self

    @property
    def dag_id(self) -> str:
        return f"retrain_{self.name}"

    @property
    def cron(self) -> str:
        return CADENCE_CRON[self.schedule.cadence].format(weekday=(self.schedule.calendar.weekday + 1) % 7)

    def digest(self) -> str:
        """sha256 of the canonical config: recorded as lineage on every run and model version."""
        # Optional fields added later are left out while unset, so configs that do not use them keep the digests they had.
        exclude: dict[str, set[str]] = {}
        for section, name, unset in _LATER_FIELDS:
            if getattr(getattr(self, section), name) == unset:
                exclude.setdefault(section, set()).add(name)
        canonical = json.dumps(self.model_dump(mode="json", exclude=exclude or None), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


_LATER_FIELDS = (
    ("approval", "fab_user_ids", {}),
    ("schedule", "weekday", "monday"),
    ("evaluation", "escalation_label", None),
    ("gate", "false_escalation", None),
    ("gate", "retrieval", None),
    ("gate", "reranking", None),
    ("gate", "generation", None),
    ("data", "corpus_file", None),
)
"""(section, field, value while unset) of fields added after configs were in use; see ModelConfig.digest."""


def _format_errors(path: Path, error: ValidationError) -> str:
    lines = [f"{path}: invalid model config ({error.error_count()} problem(s))"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "<root>"
        lines.append(f"  field '{field}': {item['msg']}")
    return "\n".join(lines)


def load_config(path: str | Path) -> ModelConfig:
    """Load and validate one model config; raises ConfigError naming the file and field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of fields")
    if raw.get("name") != path.stem:
        raise ConfigError(f"{path}: field 'name' must equal the file name '{path.stem}', got {raw.get('name')!r}")
    try:
        config = ModelConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc)) from None
    labels_path = PROJECT_ROOT / config.data.labels_file
    if not labels_path.is_file():
        raise ConfigError(f"{path}: field 'data.labels_file': no such file {labels_path}")
    if config.data.corpus_file and not (PROJECT_ROOT / config.data.corpus_file).is_file():
        raise ConfigError(f"{path}: field 'data.corpus_file': no such file {PROJECT_ROOT / config.data.corpus_file}")
    escalation = config.evaluation.escalation_label
    if escalation is not None and escalation not in config.data.labels():
        raise ConfigError(f"{path}: field 'evaluation.escalation_label': {escalation!r} is not one of the labels in {config.data.labels_file}")
    return config


def config_paths(config_dir: Path | None = None) -> list[Path]:
    """All model config files, sorted by name (default directory: ``RETRAIN_CONFIG_DIR``, read now)."""
    return sorted((config_dir or current_config_dir()).glob("*.yaml"))


def load_model(name: str, config_dir: Path | None = None) -> ModelConfig:
    """Load the config of one model by name (default directory: ``RETRAIN_CONFIG_DIR``, read now)."""
    return load_config((config_dir or current_config_dir()) / f"{name}.yaml")


UNIQUE_PER_MODEL = {
    "aws.model_package_group": "each model registers its versions in its own SageMaker model package group; "
                               "a shared group would mix two models' versions and approvals",
}
"""Fields two models may not share, and why. Every other per-model name is derived from the model name, which is the
file name (S3 keys ``raw/<model>/``…, job names, SNS subjects ``[retrain <model>]``, the MLflow registered model); the
buckets, the MLflow server, the SNS topic and the Slack connection are one per deployment and may be shared."""


def _value(config: ModelConfig, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part, None)
    return value


def _shared(path: Path, config: ModelConfig, others: dict[Path, ModelConfig]) -> list[str]:
    """Where ``config`` (file ``path``) shares a ``UNIQUE_PER_MODEL`` value with one of ``others`` (path -> config)."""
    return [f"{path}: field '{field}' is {value!r}, as in {other_path}: {why}"
            for field, why in UNIQUE_PER_MODEL.items() if (value := _value(config, field)) is not None
            for other_path, other in others.items() if other_path != path and _value(other, field) == value]


def clashes(configs: dict[Path, ModelConfig]) -> list[str]:
    """Configs (path -> config) sharing a ``UNIQUE_PER_MODEL`` value: one line per clash, naming both files and the field."""
    items = list(configs.items())
    return [line for number, (path, config) in enumerate(items) for line in _shared(path, config, dict(items[:number]))]


def config_problems(config_dir: Path | None = None) -> tuple[list[ModelConfig], list[str]]:
    """Every model config in the directory validated, then checked against each other (``UNIQUE_PER_MODEL``):
    the valid configs, and one message per problem, each naming the file (and the field)."""
    configs, problems = {}, []
    for path in config_paths(config_dir):
        try:
            configs[path] = load_config(path)
        except ConfigError as exc:
            problems.append(str(exc))
    return list(configs.values()), problems + clashes(configs)


def load_model_among_all(name: str, config_dir: Path | None = None) -> ModelConfig:
    """``load_model``, refused (ConfigError naming both files and the field) when the config shares a ``UNIQUE_PER_MODEL``
    value with another config in the directory. Each model's DAG file loads its config this way, so both models' DAG files
    show the clash; a config that does not load is its own DAG file's import error and is not compared."""
    config_dir = config_dir or current_config_dir()
    config = load_model(name, config_dir)
    others = {}
    for path in config_paths(config_dir):
        if path.stem != name:
            try:
                others[path] = load_config(path)
            except ConfigError:
                continue
    problems = _shared(config_dir / f"{name}.yaml", config, others)
    if problems:
        raise ConfigError("\n".join(problems))
    return config
