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
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from retrain.aws.config import AwsConfig  # noqa: F401  (re-exported: the aws: section of a model config)
from retrain.base_models import BASE_MODELS, known_base_model
from retrain.intervals import WEEKDAYS, Calendar
from retrain.paths import PROJECT_ROOT
from retrain.paths import config_dir as current_config_dir
from retrain.schema import Strict
from retrain.tasks import TASK_TYPES, UnknownTask, check_task, headline_metrics, supported_architectures, task_module

CADENCE_CRON = {
    "weekly": "0 0 * * {weekday}",  # 00:00 UTC on the config's weekday (cron: 0 = Sunday): intervals span one week
    "monthly": "0 0 1 * *",  # the 1st to the next 1st
    "quarterly": "0 0 1 */3 *",  # 1 January, April, July, October to the next
}


class ConfigError(ValueError):
    """A model config is missing or invalid; the message names the file and the field."""


_Strict = Strict


class ScheduleConfig(_Strict):
    """When the DAG runs. Shapes the DAG at parse time."""

    cadence: Literal["weekly", "monthly", "quarterly"] = Field(
        description="Run cadence; each run's data interval spans one period."
    )
    start_date: date = Field(description="First data interval start (UTC).")
    catchup: bool = Field(False, description="Whether the scheduler creates runs for past intervals on unpause.")
    weekday: Literal[WEEKDAYS] = Field(
        "monday",
        description="Weekly cadence only: the day (00:00 UTC) each weekly interval starts and ends, so "
        "weekly models can be staggered across the week.",
    )

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
    tags: list[str] = Field(
        default_factory=list, description="Extra DAG tags; 'retrain' and the model name are always added."
    )
    max_active_runs: int = Field(1, ge=1, description="Concurrent runs; 1 keeps dataset versions in order.")
    retries: int = Field(2, ge=0, description="Retries for job tasks (ETL, train, evaluate).")
    retry_delay_seconds: int = Field(
        30, ge=1, description="First retry delay; doubles each retry (exponential backoff)."
    )
    max_retry_delay_seconds: int = Field(600, ge=1, description="Ceiling on the backoff delay.")
    job_timeout_minutes: int = Field(
        120, ge=1, description="execution_timeout of each local job task (on aws: the job's own limits plus a margin)."
    )


class PartitionExpectations(_Strict):
    """Rules on each raw partition of a run's own interval that legal CSV can still break: one label flooding it, a row
    repeated many times, a label distribution unlike the previous dataset version's. Each refuses the data or warns,
    naming the partition and the figure; validate_raw applies them."""

    max_label_share: float = Field(
        0.8, gt=0, le=1, description="Largest share of a partition's rows one label may have."
    )
    max_duplicate_rate: float = Field(
        0.02, ge=0, le=1, description="Largest share of a partition's rows that repeat an earlier row exactly."
    )
    max_label_shift: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Largest change of any one label's share between a partition and the previous dataset version.",
    )
    min_partition_rows: int = Field(
        20, ge=1, description="Partitions with fewer rows are too small for the share and shift rules to mean much."
    )
    warn: list[Literal["label_share", "duplicate_rate", "label_shift"]] = Field(
        ["label_shift"], description="Rules that warn in the task log instead of refusing the data."
    )


class DataConfig(_Strict):
    """What raw data looks like and how the curated dataset is built. Used at run time."""

    text_column: str = Field("text", description="Raw column holding the input text.")
    label_column: str = Field("label", description="Raw column holding the label.")
    labels_file: str = Field(description="JSON list of allowed labels, relative to the project root.")
    corpus_file: str | None = Field(
        None,
        description="Retrieval-shaped tasks: JSON lines {passage_id, text}, relative to the project root. The labels "
        "are "
        "passage ids; the training job receives the corpus as --corpus-file and the deploy bundle carries it like the "
        "labels file.",
    )
    min_rows: int = Field(1, ge=1, description="Fewest rows the snapshot may hold before validation fails.")
    min_text_chars: int = Field(1, ge=1, description="Shortest allowed text after stripping whitespace.")
    max_text_chars: int = Field(1000, ge=1, description="Longest allowed text.")
    validation_fraction: float = Field(0.1, gt=0, lt=1, description="Share of keys hashed into the validation split.")
    golden_version: str = Field(description="Pinned immutable golden set version used by evaluation.")
    golden_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="Pinned content hash of that golden version; evaluation refuses any other content.",
    )
    drift_threshold: float = Field(
        0.05, ge=0, le=1, description="Below this drift score, training is skipped when a champion exists."
    )
    expectations: PartitionExpectations = Field(
        default_factory=PartitionExpectations, description="Per-partition rules beyond the CSV's shape."
    )

    @model_validator(mode="after")
    def _bounds(self) -> DataConfig:
        if self.min_text_chars > self.max_text_chars:
            raise ValueError("min_text_chars must not exceed max_text_chars")
        return self

    def files(self) -> list[str]:
        """The project-relative data files a job needs beside the dataset (the labels file, and the corpus if any)."""
        return [self.labels_file] + ([self.corpus_file] if self.corpus_file else [])

    def corpus_path(self) -> Path | None:
        """Absolute path of the corpus file, if the model has one."""
        return PROJECT_ROOT / self.corpus_file if self.corpus_file else None

    def labels(self) -> list[str]:
        """The allowed labels, in file order (the label index order)."""
        path = PROJECT_ROOT / self.labels_file
        return list(json.loads(path.read_text()))


class TrainingConfig(_Strict):
    """The training job: base model and the hyperparameters handed to the script."""

    base_model: str = Field(
        description="Base model on both backends: a catalogued model (retrain/base_models.py; its pip package "
        "locally, a copy of the same files staged by `bin/retrain deploy build` on AWS, both checked against its "
        "weights digest) or, for local-only models, a model directory; of an architecture the task type's job code "
        "builds."
    )
    aws_base_model: str | None = Field(
        None,
        description="Base model of the aws jobs when it is not base_model: a catalogued model only (staged and "
        "digest-verified, never a hub download). Unset, the aws jobs train base_model, the weights the local runs "
        "scored.",
    )
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="Passed to the training script as --key value."
    )

    @field_validator("hyperparameters")
    @classmethod
    def _scalars_only(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if not isinstance(item, (str, int, float, bool)):
                raise ValueError(f"hyperparameter {key!r} must be a scalar, got {type(item).__name__}")
            if isinstance(item, str) and ("\n" in item or "\r" in item):
                raise ValueError(
                    f"hyperparameter {key!r} holds a line break; hyperparameters are single-line strings "
                    "(SageMaker's CreateTrainingJob refuses one): write it as \\n, which the job reads as a line break"
                )
        return value

    @property
    def aws_base(self) -> str:
        """The base model the aws jobs train: ``aws_base_model``, else ``base_model``."""
        return self.aws_base_model or self.base_model


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
        None,
        description="text_classification: the label whose prediction escalates to a person (sentiment: negative); "
        "evaluation then reports the false-escalation rate.",
    )

    def task_options(self) -> dict[str, Any]:
        """The task-specific evaluation options that are set, handed to the evaluation job as JSON."""
        return {} if self.escalation_label is None else {"escalation_label": self.escalation_label}


class SignificancePolicy(_Strict):
    """Paired bootstrap of (challenger − champion) macro F1: its lower bound must clear the margin."""

    margin: float = Field(
        -0.01, ge=-1, le=1, description="Lowest acceptable CI lower bound; negative = non-inferiority."
    )
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Two-sided confidence level of the interval.")
    resamples: int = Field(2000, ge=1000, description="Bootstrap resamples (at least 1,000).")
    seed: int = Field(0, description="Seed of the resampling, so a verdict can be reproduced.")


class _GatePolicyBase(Strict):
    """The criteria every task type shares; ``GatePolicy`` adds the task types' own sections to it."""

    min_total_examples: int = Field(100, ge=1, description="Fewest golden examples the verdict may rest on.")
    min_class_support: int = Field(
        10, ge=1, description="Per-class criteria judge only classes with this many golden examples."
    )
    floors: dict[str, float] = Field(
        default_factory=dict, description="Absolute minimums of the challenger's headline metrics (the task type's)."
    )
    min_delta: dict[str, float] = Field(
        default_factory=dict, description="challenger − champion must be >= this; negative allows non-inferiority."
    )
    per_class_floor: float = Field(
        0.0, ge=0, le=1, description="Lowest F1 any judged class may have, beyond sampling noise (see per_class_alpha)."
    )
    per_class_max_regression: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Largest F1 drop against the champion any judged class may have, beyond sampling noise (see "
        "per_class_alpha).",
    )
    per_class_alpha: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Family-wise error rate of each per-class family (floor, regression): a class fails only if past "
        "its limit and its exact test survives step-down Tarone–Holm at this level.",
    )
    latency_p50_ms_max: float = Field(float("inf"), gt=0, description="Ceiling of median single-request latency.")
    latency_p99_ms_max: float = Field(float("inf"), gt=0, description="Ceiling of p99 single-request latency.")
    significance: SignificancePolicy = Field(default_factory=SignificancePolicy)

    def unset_optional_sections(self) -> set[str] | None:
        """Task sections left unset: left out of dumps, so policies that do not use them keep their digests."""
        return {name for name in TASK_SECTIONS if getattr(self, name) is None} or None


def _task_sections() -> dict[str, type[Strict]]:
    """Each task type's own gate sections (its gate module's ``POLICY_SECTIONS``), by name: the one place
    the gate policy learns of task types, so a new one adds its section in its own module."""
    sections: dict[str, type[Strict]] = {}
    for task in TASK_TYPES:
        for name, model in getattr(task_module("gate", task), "POLICY_SECTIONS", {}).items():
            if name in sections or name in _GatePolicyBase.model_fields:
                raise ValueError(f"gate section {name!r} of task {task!r} is already defined")
            sections[name] = model
    return sections


TASK_SECTIONS = _task_sections()
"""Optional ``gate:`` sections that task types add (false_escalation, retrieval, reranking, generation)."""

GatePolicy = create_model(
    "GatePolicy",
    __base__=_GatePolicyBase,
    __doc__="What a challenger must satisfy before it may be registered: the common criteria and each task type's "
    "section.",
    __module__=__name__,
    **{
        name: (model | None, Field(None, description=" ".join((model.__doc__ or "").split())))
        for name, model in TASK_SECTIONS.items()
    },
)


class SampleDataConfig(_Strict):
    """Sample data that ``seed`` lands for this model (paths relative to the project root, or absolute)."""

    raw: str = Field(description="CSV of labelled examples, spread over raw partitions by a hash of the text.")
    golden: str = Field(description="CSV published as the golden version named by data.golden_version.")
    partitions: int = Field(6, ge=1, le=60, description="Consecutive data intervals the raw rows are spread over.")
    source_notes: str = Field("", description="Where the sample comes from; its SOURCE.md sits beside the files.")

    def path(self, which: str) -> Path:
        """Absolute path of the raw or golden file."""
        return PROJECT_ROOT / getattr(self, which)


class ShadowPolicy(_Strict):
    """The shadow window: the challenger gets a copy of live requests; its answers are compared, never returned."""

    min_requests: int = Field(50, ge=1, description="Compared requests the window needs before it can pass.")
    max_minutes: float = Field(60, gt=0, description="How long the window may wait for them.")
    min_agreement: float = Field(
        0.8, ge=0, le=1, description="Lowest mean agreement with the champion (label, top-k ids or JSON fields)."
    )
    max_error_rate: float = Field(0.05, ge=0, le=1, description="Ceiling of the shadow's failed or timed-out share.")
    p99_ms_max: float | None = Field(
        None, gt=0, description="Ceiling of the shadow's p99 latency (ms); default: gate.latency_p99_ms_max."
    )


class CanaryPolicy(_Strict):
    """The canary window: the challenger answers ``percent`` of live traffic; a breach rolls it back."""

    percent: float = Field(5, gt=0, lt=100, description="Share of requests the canary answers (percent).")
    min_requests: int = Field(100, ge=1, description="Canary requests the window needs before it can pass.")
    window_minutes: float = Field(60, gt=0, description="How long the canary is observed.")
    max_error_rate: float = Field(0.05, ge=0, le=1, description="Error rate above which it is rolled back.")
    p99_ms_max: float | None = Field(
        None, gt=0, description="p99 latency (ms) above which it is rolled back; default: gate.latency_p99_ms_max."
    )


class InjectedFaults(_Strict):
    error_rate: float = Field(0.0, ge=0, le=1, description="Share of the variant's requests answered 500.")
    latency_ms: float = Field(0.0, ge=0, le=60_000, description="Delay added to each of its requests.")


class DeploymentConfig(_Strict):
    """After approval: shadow, then canary, then 100%, on the model server's endpoint (``bin/retrain serve``)."""

    shadow: ShadowPolicy = Field(default_factory=ShadowPolicy)
    canary: CanaryPolicy = Field(default_factory=CanaryPolicy)
    poll_seconds: float = Field(15, gt=0, le=600, description="How often a window reads the server's counters.")
    test_faults: dict[Literal["shadow", "canary"], InjectedFaults] = Field(
        default_factory=dict,
        description="Tests and drills only: failures injected into the challenger's variant, so that an automatic "
        "rollback can be watched. Absent in production configs.",
    )


class ApprovalConfig(_Strict):
    """Who may approve a challenger and how long they have."""

    assigned_users: list[str] = Field(min_length=1, description="Airflow user ids allowed to approve or reject.")
    response_timeout_hours: float = Field(
        168, gt=0, description="After this, the request counts as rejected (default 7 days)."
    )
    rollback_users: list[str] = Field(
        default_factory=list,
        description="Airflow users allowed to roll back (a production change); empty = the assigned approvers.",
    )
    fab_user_ids: dict[str, str] = Field(
        default_factory=dict,
        description="Under the FAB auth manager (MWAA), each assigned user name -> its numeric FAB user id: FAB "
        "matches approvers by id, never by name.",
    )

    @field_validator("fab_user_ids", mode="before")
    @classmethod
    def _numeric_ids(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        # YAML reads an unquoted 7 as an int; FAB's User.get_id() is the string "7".
        ids = {
            user: str(uid) if isinstance(uid, int) and not isinstance(uid, bool) else uid for user, uid in value.items()
        }
        bad = [
            f"{user}: {uid!r}"
            for user, uid in ids.items()
            if not (isinstance(uid, str) and re.fullmatch(r"[1-9]\d*", uid))
        ]
        if bad:
            raise ValueError(f"FAB user ids are positive integers such as 7; not ids: {', '.join(bad)}")
        return ids

    @model_validator(mode="after")
    def _ids_for_approvers_only(self) -> ApprovalConfig:
        unknown = sorted(set(self.fab_user_ids) - set(self.assigned_users) - set(self.rollback_users))
        if unknown:
            raise ValueError(
                f"fab_user_ids names users who are neither assigned_users nor rollback_users: {', '.join(unknown)}"
            )
        return self

    def approvers(self, by_fab_id: bool) -> list[dict[str, str]]:
        """HITL ``assigned_users``: ``{"id", "name"}`` per approver; the id is the FAB user id when ``by_fab_id``."""
        if not by_fab_id:
            return [{"id": user, "name": user} for user in self.assigned_users]
        missing = [user for user in self.assigned_users if user not in self.fab_user_ids]
        if missing:
            raise ValueError(
                f"field 'approval.fab_user_ids': no FAB user id for {', '.join(missing)}; under the FAB auth manager "
                "approvers are matched by numeric id (see README, 'Approval on MWAA')"
            )
        return [{"id": self.fab_user_ids[user], "name": user} for user in self.assigned_users]

    def may_roll_back(self, user: str | None) -> bool:
        """Whether ``user`` may move the champion back."""
        return bool(user) and user in (self.rollback_users or self.assigned_users)

    def rollback_refusal(self, model: str, user: str | None) -> str:
        """Why ``user`` may not roll back ``model``, naming who may."""
        allowed = ", ".join(self.rollback_users or self.assigned_users)
        return (
            f"{user or 'an unknown user'} may not roll back {model}: a rollback is a production change, allowed to "
            f"{allowed} (approval.rollback_users, else approval.assigned_users); nothing was changed"
        )


class ModelConfig(_Strict):
    """Everything about one model's retraining pipeline."""

    name: str = Field(description="Model name; the DAG id is retrain_<name>.")
    task: str = Field(
        description=f"Task type; selects the training, evaluation, metrics and gate criteria ({', '.join(TASK_TYPES)})."
    )
    description: str = Field("", description="Shown as the DAG's description.")
    schedule: ScheduleConfig
    dag: DagConfig
    data: DataConfig
    training: TrainingConfig
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    gate: GatePolicy = Field(default_factory=GatePolicy)
    approval: ApprovalConfig
    deployment: DeploymentConfig = Field(
        default_factory=DeploymentConfig, description="The staged rollout after approval (shadow, canary, 100%)."
    )
    sample_data: SampleDataConfig | None = Field(
        None, description="Sample data for `seed` and the demo; absent in production configs."
    )
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
                raise ValueError(
                    f"gate.{section} names {unknown}, not headline metrics of task {self.task!r} ({', '.join(metrics)})"
                )
        for section in TASK_SECTIONS:  # each set task section: the metrics it names, and what it needs of the config
            rule = getattr(self.gate, section)
            if rule is None:
                continue
            unknown = sorted(set(getattr(rule, "named_metrics", set)()) - set(metrics))
            if unknown:
                raise ValueError(
                    f"gate.{section} names {unknown}, not headline metrics of task {self.task!r} ({', '.join(metrics)})"
                )
            problem = getattr(rule, "config_problem", lambda config: None)(self)
            if problem:
                raise ValueError(f"gate.{section} {problem}")
        return self

    @model_validator(mode="after")
    def _base_models_fit(self) -> ModelConfig:
        for field, aws_only in _base_model_fields(self):
            problem = base_model_problem(self.task, getattr(self.training, field), aws_only)
            if problem:
                raise field_error(("training", field), problem, getattr(self.training, field))
        return self

    @property
    def dag_id(self) -> str:
        return f"retrain_{self.name}"

    @property
    def cron(self) -> str:
        return CADENCE_CRON[self.schedule.cadence].format(weekday=(self.schedule.calendar.weekday + 1) % 7)

    def digest(self) -> str:
        """sha256 of the canonical config: recorded as lineage on every run and model version."""
        # Optional fields added later are left out while unset, so configs that do not use them keep the digests they
        # had.
        exclude: dict[str, Any] = {}
        if self.deployment == DeploymentConfig():  # the deployment section came later still, as a whole
            exclude["deployment"] = True
        if self.aws is not None and self.aws.endpoint == type(self.aws.endpoint)():  # so did the aws endpoint's
            exclude["aws"] = {"endpoint"}
        for section, name, unset in _LATER_FIELDS:
            if getattr(getattr(self, section), name) == unset:
                exclude.setdefault(section, set()).add(name)
        canonical = json.dumps(
            self.model_dump(mode="json", exclude=exclude or None), sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


_LATER_FIELDS = (
    ("approval", "fab_user_ids", {}),
    ("schedule", "weekday", "monday"),
    ("evaluation", "escalation_label", None),
    *(("gate", section, None) for section in TASK_SECTIONS),
    ("data", "corpus_file", None),
    ("data", "expectations", PartitionExpectations()),
)
"""(section, field, value while unset) of fields added after configs were in use; see ModelConfig.digest."""


def field_error(loc: tuple[str, ...], message: str, value: Any) -> ValidationError:
    """A ValidationError located at ``loc``, for a rule a model validator checks across sections (so the message
    names the field, not the config's root)."""
    detail = InitErrorDetails(
        type=PydanticCustomError("config_rule", "{message}", {"message": message}), loc=loc, input=value
    )
    return ValidationError.from_exception_data("ModelConfig", [detail])


def _base_model_fields(config: ModelConfig) -> list[tuple[str, bool]]:
    """(field, whether an aws job trains it) of the set base model fields: base_model is the aws jobs' base too
    unless aws_base_model is set."""
    aws_trains_base = config.aws is not None and config.training.aws_base_model is None
    fields = [("base_model", aws_trains_base)]
    return fields + ([("aws_base_model", True)] if config.training.aws_base_model is not None else [])


def _architecture(name: str) -> str | None:
    """``model_type`` of a catalogued base model, or of a model directory's config.json; None for anything else."""
    known = known_base_model(name)
    if known is not None:
        return known.model_type
    config = Path(name) / "config.json"
    try:
        return str(json.loads(config.read_text()).get("model_type")) if config.is_file() else None
    except (ValueError, AttributeError):
        return None


def base_model_problem(task: str, name: str, aws: bool) -> str | None:
    """Why ``name`` cannot be the base model of a ``task`` model (``aws``: on the aws backend); None when it can."""
    catalogued = ", ".join(BASE_MODELS)
    if aws and known_base_model(name) is None:
        return (
            f"{name!r} is not a catalogued base model ({catalogued}): an aws job trains only a copy of one, staged by "
            "`bin/retrain deploy build` and checked against its weights digest, never a hub download or a local "
            "directory, so that it trains the weights the local runs scored"
        )
    model_type = _architecture(name)
    if model_type is None:
        return f"{name!r} is neither a catalogued base model ({catalogued}) nor a model directory with a config.json"
    supported = supported_architectures(task)
    if model_type not in supported:
        built = ", ".join(f"{kind} ({cls})" for kind, cls in supported.items())
        return (
            f"{name!r} is a {model_type!r} model, and the {task} job code builds only {built}; "
            "another architecture would fail inside the job"
        )
    return None


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
        raise ConfigError(
            f"{path}: field 'evaluation.escalation_label': {escalation!r} is not one of the labels in "
            f"{config.data.labels_file}"
        )
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
    return [
        f"{path}: field '{field}' is {value!r}, as in {other_path}: {why}"
        for field, why in UNIQUE_PER_MODEL.items()
        if (value := _value(config, field)) is not None
        for other_path, other in others.items()
        if other_path != path and _value(other, field) == value
    ]


def clashes(configs: dict[Path, ModelConfig]) -> list[str]:
    """Configs (path -> config) sharing a ``UNIQUE_PER_MODEL`` value: one line per clash, naming both files and the
    field."""
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
    """``load_model``, refused (ConfigError naming both files and the field) when the config shares a
    ``UNIQUE_PER_MODEL`` value with another config in the directory. Each model's DAG file loads its config this
    way, so both models' DAG files show the clash; a config that does not load is its own DAG file's import error
    and is not compared."""
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
