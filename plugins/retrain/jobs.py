"""What each job is asked to do, as backend-neutral specs.

A ``JobSpec`` names the script, its ``--key value`` arguments, and the store keys it reads and
writes, each with a kind (file, directory, output, training channel). The local runner maps them
onto paths under the local store (``retrain.runner.local_job``); the AWS request builders map the
same specs onto S3 URIs and container paths (``retrain.aws.locations.aws_job_from_spec``). Plain Python.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from retrain import ledger
from retrain.config import ModelConfig, PartitionExpectations
from retrain.paths import PROJECT_ROOT
from retrain.store import Store
from retrain.tasks import TASK_TYPES


def run_key(run_id: str) -> str:
    """An Airflow run id made safe as one path segment (run ids hold ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id)


@dataclass(frozen=True)
class RunContext:
    """The Airflow run as the jobs see it: identity, data interval, params, upstream results."""

    dag_id: str
    run_id: str
    interval_start: datetime | None
    interval_end: datetime | None
    force: bool = False
    upstream: dict[str, Any] = field(default_factory=dict)
    try_number: int = 1

    @property
    def run_key(self) -> str:
        return run_key(self.run_id)


Kind = Literal["file", "dir", "output"]


@dataclass(frozen=True)
class Key:
    """A store key a job reads (``file`` or ``dir``) or writes into (``output``, a directory).

    Locally the runner maps it to a path under the store's root; on AWS it becomes an S3 URI
    (Glue), or a processing input or output mounted under ``/opt/ml/processing`` (SageMaker)."""

    key: str
    kind: Kind = "file"


@dataclass(frozen=True)
class Upstream:
    """A location an earlier task returned (``store.uri``): a path locally, an ``s3://`` URI on AWS."""

    location: str


@dataclass(frozen=True)
class ProjectFile:
    """A file a config names (a labels file, a corpus): relative to the project root, or an absolute path."""

    path: str


@dataclass(frozen=True)
class StoreRoot:
    """The store itself, for a job that opens it (``retrain.store.store_for``): a root locally, buckets on AWS."""


Value = str | Key | Upstream | ProjectFile | StoreRoot
"""What a job argument or environment value is, before a backend maps it."""


@dataclass(frozen=True)
class JobSpec:
    """One job, backend-neutral: a project script, its ``--key value`` arguments, and its store keys.

    Nothing here is a path: every input and output is a store key with a kind (``Key``), a training
    channel (``channels``: name → directory key), or a location an upstream task returned. Each
    backend maps a spec in one place: ``retrain.runner.local_job`` (paths under the local store) and
    ``retrain.aws.locations.aws_job_from_spec`` (S3 URIs, SageMaker channels and container paths)."""

    name: str
    kind: Literal["glue", "training", "processing"]
    script: str  # relative to the project root, e.g. include/etl/build_dataset.py
    arguments: dict[str, Value]
    result_key: str  # the JSON the job writes as its result
    channels: dict[str, str] = field(default_factory=dict)  # training: channel name -> directory key
    model_key: str | None = None  # training: SM_MODEL_DIR
    output_key: str | None = None  # the job's output directory (training: SM_OUTPUT_DATA_DIR)
    checkpoint_key: str | None = None  # training: the checkpoint directory a restarted job resumes from
    env: dict[str, Value] = field(default_factory=dict)
    tracking: bool = False  # the job logs to MLflow: each backend adds its tracking settings
    workdir_key: str | None = None  # the try's own output directory, claimed exclusively before the job starts


def git_sha() -> str:
    """Commit of the code that runs the job, with '-dirty' when the tree has local edits."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT, capture_output=True, text=True
        ).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_prefix(config: ModelConfig, ctx: RunContext) -> str:
    """``runs/<model>/<run_key>``: the store key under which one run keeps everything it writes."""
    return f"runs/{config.name}/{ctx.run_key}"


def try_key(config: ModelConfig, ctx: RunContext, task: str) -> str:
    """``runs/<model>/<run_key>/<task>/try-<n>``: the store key of one try's outputs, on every backend.

    A cleared or retried task gets a new try number, so it never overwrites what an earlier
    try wrote (weights a ledger entry points to, a gate.json someone approved)."""
    return f"{run_prefix(config, ctx)}/{task}/try-{ctx.try_number}"


def latest_try(task_root: Path) -> Path | None:
    """The newest ``try-<n>`` directory of a task, or None: what readers of a run (demo, CLI) show."""
    tries = [(int(p.name[4:]), p) for p in task_root.glob("try-*") if p.name[4:].isdigit()]
    return max(tries)[1] if tries else None


def write_once_json(store: Store, key: str, obj: Any) -> str:
    """Write a JSON output of an in-process task (snapshot, gate, decision) once, on any store; refuse to
    overwrite. Returns its location (``store.uri``: a path locally, an ``s3://`` URI on aws)."""
    store.write_once_bytes(key, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
    return store.uri(key)


def checkpoint_key(config: ModelConfig, ctx: RunContext, dataset_version: str) -> str:
    """Shared by the tries of one run, but only for the same config and dataset version: a retry
    resumes a killed try's training, while a changed config or dataset starts afresh."""
    return f"{run_prefix(config, ctx)}/train_model/checkpoints/{config.digest()[:16]}-{dataset_version}"


def lineage(config: ModelConfig, ctx: RunContext, dataset_version: str | None) -> dict[str, str]:
    """Tags that let anyone rebuild a model from its MLflow run alone (docs/operations.md, lineage)."""
    return {
        "model_name": config.name,
        "dataset_version": dataset_version or "",
        "golden_version": config.data.golden_version,
        "base_model": config.training.base_model,
        "git_sha": git_sha(),
        "config_digest": config.digest(),
        "airflow_dag_id": ctx.dag_id,
        "airflow_run_id": ctx.run_id,
    }


def _raw_data_arguments(config: ModelConfig, ctx: RunContext) -> dict[str, Value]:
    """Where the snapshot is and what its columns and labels are: shared by validation and the ETL."""
    return {
        "raw-manifest": Upstream(ctx.upstream["snapshot_raw"]["manifest_path"]),
        "store-root": StoreRoot(),
        "text-column": config.data.text_column,
        "label-column": config.data.label_column,
        "labels-file": ProjectFile(config.data.labels_file),
    }


def _expectation_arguments(rules: PartitionExpectations) -> dict[str, Value]:
    """The per-partition rules as validate_raw's arguments (a warning rule is listed in --warn)."""
    return {
        "max-label-share": str(rules.max_label_share),
        "max-duplicate-rate": str(rules.max_duplicate_rate),
        "max-label-shift": str(rules.max_label_shift),
        "min-partition-rows": str(rules.min_partition_rows),
        "warn": ",".join(rules.warn),
    }


def validate_raw_spec(config: ModelConfig, ctx: RunContext) -> JobSpec:
    """Great Expectations over the snapshot's files."""
    out = try_key(config, ctx, "validate_raw")
    data = config.data
    return JobSpec(
        name="validate_raw",
        kind="processing",
        script="include/validation/validate_raw.py",
        arguments={
            **_raw_data_arguments(config, ctx),
            "min-rows": str(data.min_rows),
            "min-text-chars": str(data.min_text_chars),
            "max-text-chars": str(data.max_text_chars),
            **_expectation_arguments(data.expectations),
            "output-dir": Key(out, "output"),
        },
        output_key=out,
        result_key=f"{out}/result.json",
        workdir_key=out,
    )


def build_dataset_spec(config: ModelConfig, ctx: RunContext) -> JobSpec:
    """The Spark ETL: clean, dedupe, decontaminate, split, version."""
    out = try_key(config, ctx, "build_dataset")
    data = config.data
    return JobSpec(
        name="build_dataset",
        kind="glue",
        script="include/etl/build_dataset.py",
        arguments={
            "model": config.name,
            **_raw_data_arguments(config, ctx),
            "golden-version": data.golden_version,
            "expected-golden-sha256": data.golden_sha256 or "",
            "validation-fraction": str(data.validation_fraction),
            "result-file": Key(f"{out}/result.json", "output"),
        },
        result_key=f"{out}/result.json",
        workdir_key=out,
    )


def train_model_spec(config: ModelConfig, ctx: RunContext) -> JobSpec:
    """Script-mode training on the dataset version that build_dataset produced."""
    built = ctx.upstream["build_dataset"]
    version = f"datasets/{config.name}/{built['dataset_version']}"
    base = try_key(config, ctx, "train_model")
    hyperparameters: dict[str, Value] = {key: str(value) for key, value in config.training.hyperparameters.items()}
    hyperparameters.update(
        {
            "task": config.task,
            "base-model": config.training.base_model,
            "dataset-version": built["dataset_version"],
            "config-digest": config.digest(),
            "labels-file": ProjectFile(config.data.labels_file),
            **({"corpus-file": ProjectFile(config.data.corpus_file)} if config.data.corpus_file else {}),
            "experiment-name": ctx.dag_id,
            "run-name": f"{ctx.dag_id}/{ctx.run_key}",
        }
    )
    tags = lineage(config, ctx, built["dataset_version"])
    return JobSpec(
        name="train_model",
        kind="training",
        script="include/retrain_jobs/train.py",
        arguments={key.replace("_", "-"): value for key, value in hyperparameters.items()},
        channels={"train": f"{version}/train", "validation": f"{version}/validation"},
        model_key=f"{base}/model",
        output_key=f"{base}/output",
        checkpoint_key=checkpoint_key(config, ctx, built["dataset_version"]),
        env={"RETRAIN_LINEAGE": _json(tags)},
        tracking=True,
        result_key=f"{base}/model/training_summary.json",
        workdir_key=base,
    )


def evaluate_model_spec(config: ModelConfig, ctx: RunContext, champion: dict[str, Any] | None = None) -> JobSpec:
    """Score challenger and champion on the pinned golden set, in one run.

    ``champion`` is the ledger's current champion entry (``retrain.ledger.current_champion``), or None."""
    trained = ctx.upstream["train_model"]
    out = try_key(config, ctx, "evaluate_model")
    latency = config.evaluation.latency
    arguments: dict[str, Value] = {
        "challenger-dir": Upstream(trained["model_dir"]),
        "challenger-digest": trained["weights_digest"],
        "golden-dir": Key(f"golden/{config.name}/{config.data.golden_version}", "dir"),
        "output-dir": Key(out, "output"),
        "batch-size": str(config.evaluation.batch_size),
        "latency-requests": str(latency.requests),
        "latency-warmup": str(latency.warmup),
        "latency-threads": str(latency.threads),
        "mlflow-run-id": trained.get("mlflow_run_id") or "",
        "expected-golden-sha256": config.data.golden_sha256 or "",
        "task": config.task,
        "task-options": _json(config.evaluation.task_options()),
    }
    if champion is not None:
        arguments["champion-dir"] = Upstream(champion["model_dir"])
        arguments["champion-version"] = str(champion["to_version"])
        arguments["champion-digest"] = (
            champion.get("weights_digest") or ""
        )  # entries before digests were recorded have none
    return JobSpec(
        name="evaluate_model",
        kind="processing",
        script="include/retrain_jobs/evaluate.py",
        arguments=arguments,
        output_key=out,
        tracking=True,
        result_key=f"{out}/metrics.json",
        workdir_key=out,
    )


def _registry_spec(
    config: ModelConfig, ctx: RunContext, name: str, command: str, arguments: dict[str, Value]
) -> JobSpec:
    """The registry runs where mlflow is installed: the job environment (on AWS, SageMaker's registry)."""
    out = try_key(config, ctx, name)
    return JobSpec(
        name=name,
        kind="processing",
        script="plugins/retrain/registry.py",
        arguments={
            "command": command,
            "model": config.name,
            **arguments,
            "result-file": Key(f"{out}/result.json", "output"),
        },
        env={"RETRAIN_HOME": StoreRoot()},
        tracking=True,
        result_key=f"{out}/result.json",
        workdir_key=out,
    )


def register_model_spec(config: ModelConfig, ctx: RunContext) -> JobSpec:
    """Register the gated challenger with lineage tags and its evidence; alias it challenger."""
    trained, evaluated, gated = (ctx.upstream[k] for k in ("train_model", "evaluate_model", "gate_on_metrics"))
    tags = {
        **lineage(config, ctx, trained["dataset_version"]),
        "weights_digest": trained["weights_digest"],
        "gate_digest": gated["digest"],
        **{f"golden_{metric}": f"{evaluated['challenger'][metric]:.6f}" for metric in TASK_TYPES[config.task]},
        # the digest of the base weights it was trained from, which an adapter-only model (causal_lm_lora) needs
        **({"base_model_digest": trained["base_model_digest"]} if trained.get("base_model_digest") else {}),
    }
    evidence = {"metrics": evaluated["metrics_path"], "report": gated["report_path"], "gate": gated["gate_path"]}
    return _registry_spec(
        config,
        ctx,
        "register_model",
        "register",
        {
            "task": config.task,
            "model-dir": Upstream(trained["model_dir"]),
            "run-id": trained["mlflow_run_id"],
            "tags-json": _json(tags),
            "evidence-json": _json(evidence),
        },
    )


def promote_model_spec(config: ModelConfig, ctx: RunContext) -> JobSpec:
    """Move champion to the approved version; the approver from the approval response is the actor."""
    registered, approval, gated = (ctx.upstream[k] for k in ("register_model", "await_approval", "gate_on_metrics"))
    actor = (approval.get("responded_by_user") or {}).get("id")
    if not actor:
        raise ValueError("promote_model needs the approver's identity from await_approval; none was recorded")
    reason = (approval.get("params_input") or {}).get("reason") or f"approved in {ctx.dag_id} run {ctx.run_id}"
    return _registry_spec(
        config,
        ctx,
        "promote_model",
        "promote",
        {
            "version": str(registered["version"]),
            "actor": actor,
            "reason": reason,
            "gate-digest": gated["digest"],
            "run-id": ctx.run_id,
            "gated-champion": str(gated.get("champion_version") or ""),
        },
    )


def reject_model_spec(config: ModelConfig, ctx: RunContext, version: int, actor: str | None, reason: str) -> JobSpec:
    """Record a rejection or a timeout and clear challenger."""
    return _registry_spec(
        config, ctx, "reject_model", "reject", {"version": str(version), "actor": actor or "", "reason": reason}
    )


def rollback_model_spec(config: ModelConfig, ctx: RunContext, target: int | None, actor: str, reason: str) -> JobSpec:
    """Move champion back (default: the previous champion in the ledger)."""
    return _registry_spec(
        config,
        ctx,
        "rollback_model",
        "rollback",
        {
            "task": config.task,
            "target-version": "" if target is None else str(target),
            "actor": actor,
            "reason": reason,
        },
    )


def summarize_metrics(metrics: dict[str, Any], metrics_location: str) -> dict[str, Any]:
    """What downstream tasks need of metrics.json; the per-example arrays stay in the file, not in XCom."""

    def brief(block):
        keys = (*TASK_TYPES[metrics.get("task", "text_classification")], "latency_ms", "version", "model_dir")
        return None if block is None else {k: block.get(k) for k in keys}

    return {
        "metrics_path": metrics_location,
        "report_path": metrics_location.rsplit("/", 1)[0] + "/report.html",
        "golden_version": metrics["golden_version"],
        "n_examples": metrics["n_examples"],
        "challenger": brief(metrics["challenger"]),
        "champion": brief(metrics.get("champion")),
    }


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


def job_spec(task: str, config: ModelConfig, ctx: RunContext, ledger_store: Store | None) -> JobSpec:
    """The spec of one of the DAG's job tasks; evaluate_model reads its champion from ``ledger_store``'s ledger
    (None: no ledger to read, so no champion)."""
    if task == "evaluate_model":
        champion = None if ledger_store is None else ledger.current_champion(ledger_store, config.name)
        return evaluate_model_spec(config, ctx, champion)
    return SPEC_BUILDERS[task](config, ctx)


SPEC_BUILDERS = {
    "validate_raw": validate_raw_spec,
    "build_dataset": build_dataset_spec,
    "train_model": train_model_spec,
    "evaluate_model": evaluate_model_spec,
    "register_model": register_model_spec,
    "promote_model": promote_model_spec,
}
XCOM_SUMMARIES = {"evaluate_model": summarize_metrics}
