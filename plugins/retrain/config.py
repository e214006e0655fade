"""Validated per-model configuration.

One YAML file per model lives in ``config/models/<model>.yaml``. The schema keeps
what shapes the DAG at parse time (``schedule``, ``dag``, ``backend``) apart from
what the jobs need at run time (``data``, ``training.hyperparameters``,
``evaluation``). Plain Python: no Airflow import, so jobs and tests reuse it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from retrain.paths import CONFIG_DIR, PROJECT_ROOT

CADENCE_CRON = {
    "weekly": "0 0 * * 1",  # Monday 00:00 UTC: intervals span Monday to Monday
    "monthly": "0 0 1 * *",
    "quarterly": "0 0 1 */3 *",
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
    min_rows: int = Field(1, ge=1, description="Fewest rows the snapshot may hold before validation fails.")
    min_text_chars: int = Field(1, ge=1, description="Shortest allowed text after stripping whitespace.")
    max_text_chars: int = Field(1000, ge=1, description="Longest allowed text.")
    validation_fraction: float = Field(0.1, gt=0, lt=1, description="Share of keys hashed into the validation split.")
    golden_version: str = Field(description="Pinned immutable golden set version used by evaluation.")
    golden_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="Pinned content hash of that golden version; evaluation refuses any other content.")
    drift_threshold: float = Field(0.05, ge=0, le=1, description="Below this drift score, training is skipped when a champion exists.")

    @model_validator(mode="after")
    def _bounds(self) -> "DataConfig":
        if self.min_text_chars > self.max_text_chars:
            raise ValueError("min_text_chars must not exceed max_text_chars")
        return self

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


class SignificancePolicy(_Strict):
    """Paired bootstrap of (challenger − champion) macro F1: its lower bound must clear the margin."""

    margin: float = Field(-0.01, ge=-1, le=1, description="Lowest acceptable CI lower bound; negative = non-inferiority.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Two-sided confidence level of the interval.")
    resamples: int = Field(2000, ge=1000, description="Bootstrap resamples (at least 1,000).")
    seed: int = Field(0, description="Seed of the resampling, so a verdict can be reproduced.")


class GatePolicy(_Strict):
    """What a challenger must satisfy before it may be registered."""

    min_total_examples: int = Field(100, ge=1, description="Fewest golden examples the verdict may rest on.")
    min_class_support: int = Field(10, ge=1, description="Per-class criteria judge only classes with this many golden examples.")
    floors: dict[Literal["macro_f1", "accuracy"], float] = Field(default_factory=dict, description="Absolute minimums of the challenger.")
    min_delta: dict[Literal["macro_f1", "accuracy"], float] = Field(default_factory=dict, description="challenger − champion must be >= this; negative allows non-inferiority.")
    per_class_floor: float = Field(0.0, ge=0, le=1, description="Lowest F1 any judged class may have, beyond sampling noise (see per_class_alpha).")
    per_class_max_regression: float = Field(1.0, ge=0, le=1, description="Largest F1 drop against the champion any judged class may have, beyond sampling noise (see per_class_alpha).")
    per_class_alpha: float = Field(0.05, gt=0, lt=1, description="Family-wise error rate of each per-class family (floor, regression): a class fails only if past its limit and its exact test survives step-down Tarone–Holm at this level.")
    latency_p50_ms_max: float = Field(float("inf"), gt=0, description="Ceiling of median single-request latency.")
    latency_p99_ms_max: float = Field(float("inf"), gt=0, description="Ceiling of p99 single-request latency.")
    significance: SignificancePolicy = Field(default_factory=SignificancePolicy)


class ApprovalConfig(_Strict):
    """Who may approve a challenger and how long they have."""

    assigned_users: list[str] = Field(min_length=1, description="Airflow user ids allowed to approve or reject.")
    response_timeout_hours: float = Field(168, gt=0, description="After this, the request counts as rejected (default 7 days).")


class ModelConfig(_Strict):
    """Everything about one model's retraining pipeline."""

    name: str = Field(description="Model name; the DAG id is retrain_<name>.")
    task: Literal["text_classification"] = Field(description="What the model does; selects train/evaluate logic.")
    description: str = Field("", description="Shown as the DAG's description.")
    schedule: ScheduleConfig
    dag: DagConfig
    data: DataConfig
    training: TrainingConfig
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    gate: GatePolicy = Field(default_factory=GatePolicy)
    approval: ApprovalConfig

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not value.isidentifier() or value.lower() != value:
            raise ValueError("must be a lower-case identifier such as 'intent'")
        return value

    @property
    def dag_id(self) -> str:
        return f"retrain_{self.name}"

    @property
    def cron(self) -> str:
        return CADENCE_CRON[self.schedule.cadence]

    def digest(self) -> str:
        """sha256 of the canonical config: recorded as lineage on every run and model version."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


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
    return config


def config_paths(config_dir: Path = CONFIG_DIR) -> list[Path]:
    """All model config files, sorted by name."""
    return sorted(config_dir.glob("*.yaml"))


def load_model(name: str, config_dir: Path = CONFIG_DIR) -> ModelConfig:
    """Load the config of one model by name."""
    return load_config(config_dir / f"{name}.yaml")
