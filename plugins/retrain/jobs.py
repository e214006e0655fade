"""What each job is asked to do, as backend-neutral specs.

A ``JobSpec`` names the script, its ``--key value`` arguments, and the directories it
reads and writes. The local runner maps them onto the job environment; the AWS
request builders turn the same specs into Glue and SageMaker requests. Plain Python.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from retrain import ledger
from retrain.config import ModelConfig
from retrain.paths import INCLUDE_DIR, PROJECT_ROOT, mlflow_tracking_uri
from retrain.store import LocalStore, Store, WriteOnceError
from retrain.tasks import TASK_TYPES
from retrain.tracking import ARTIFACT_ROOT_ENV, artifact_root


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


@dataclass(frozen=True)
class JobSpec:
    """One job: a script under include/, its arguments and its directories."""

    name: str
    kind: Literal["glue", "training", "processing"]
    script: Path
    arguments: dict[str, str]
    result_file: Path
    channels: dict[str, Path] = field(default_factory=dict)
    model_dir: Path | None = None
    output_dir: Path | None = None
    checkpoint_dir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    workdir: Path | None = None  # the try's own output directory, claimed exclusively by the runner


def git_sha() -> str:
    """Commit of the code that runs the job, with '-dirty' when the tree has local edits."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_dir(store: LocalStore, config: ModelConfig, ctx: RunContext) -> Path:
    """``runs/<model>/<run_key>/`` for this run."""
    return store.path(run_prefix(config, ctx))


def run_prefix(config: ModelConfig, ctx: RunContext) -> str:
    """``runs/<model>/<run_key>``: the store key under which one run keeps everything it writes."""
    return f"runs/{config.name}/{ctx.run_key}"


def try_key(config: ModelConfig, ctx: RunContext, task: str) -> str:
    """``runs/<model>/<run_key>/<task>/try-<n>``: the store key of one try's outputs, on every backend.

    A cleared or retried task gets a new try number, so it never overwrites what an earlier
    try wrote (weights a ledger entry points to, a gate.json someone approved)."""
    return f"{run_prefix(config, ctx)}/{task}/try-{ctx.try_number}"


def try_dir(store: LocalStore, config: ModelConfig, ctx: RunContext, task: str) -> Path:
    """``try_key`` as a path of a local store (the directory a job writes into)."""
    return store.path(try_key(config, ctx, task))


def latest_try(task_root: Path) -> Path | None:
    """The newest ``try-<n>`` directory of a task, or None: what readers of a run (demo, CLI) show."""
    tries = [(int(p.name[4:]), p) for p in task_root.glob("try-*") if p.name[4:].isdigit()]
    return max(tries)[1] if tries else None


def claim(directory: Path, owner: dict[str, Any]) -> Path:
    """Create a try's directory exclusively and record who owns it; refuse if it exists."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir()
    except FileExistsError:
        raise WriteOnceError(f"{directory}: exists already; a try's outputs are write-once and a new try writes to its own directory") from None
    owner = {**owner, "pid": os.getpid(), "host": socket.gethostname(), "claimed_at": datetime.now(timezone.utc).isoformat()}
    (directory / ".owner.json").write_text(json.dumps(owner, sort_keys=True) + "\n")
    return directory


def write_once_json(store: Store, key: str, obj: Any) -> str:
    """Write a JSON output of an in-process task (snapshot, gate, decision) once, on any store; refuse to
    overwrite. Returns its location (``store.uri``: a path locally, an ``s3://`` URI on aws)."""
    store.write_once_bytes(key, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
    return store.uri(key)


def checkpoint_dir(store: LocalStore, config: ModelConfig, ctx: RunContext, dataset_version: str) -> Path:
    """Shared by the tries of one run, but only for the same config and dataset version: a retry
    resumes a killed try's training, while a changed config or dataset starts afresh."""
    return run_dir(store, config, ctx) / "train_model" / "checkpoints" / f"{config.digest()[:16]}-{dataset_version}"


def lineage(config: ModelConfig, ctx: RunContext, dataset_version: str | None) -> dict[str, str]:
    """Tags that let anyone rebuild a model from its MLflow run alone (DESIGN.md, Lineage)."""
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


def _path_of(config_relative: str) -> str:
    return str(PROJECT_ROOT / config_relative)


def _raw_data_arguments(config: ModelConfig, ctx: RunContext, store: LocalStore) -> dict[str, str]:
    """Where the snapshot is and what its columns and labels are: shared by validation and the ETL."""
    return {
        "raw-manifest": ctx.upstream["snapshot_raw"]["manifest_path"],
        "store-root": str(store.root),
        "text-column": config.data.text_column,
        "label-column": config.data.label_column,
        "labels-file": _path_of(config.data.labels_file),
    }


def validate_raw_spec(config: ModelConfig, ctx: RunContext, store: LocalStore) -> JobSpec:
    """Great Expectations over the snapshot's files."""
    out = try_dir(store, config, ctx, "validate_raw")
    data = config.data
    return JobSpec(
        name="validate_raw",
        kind="processing",
        script=INCLUDE_DIR / "validation" / "validate_raw.py",
        arguments={
            **_raw_data_arguments(config, ctx, store),
            "min-rows": str(data.min_rows),
            "min-text-chars": str(data.min_text_chars),
            "max-text-chars": str(data.max_text_chars),
            "output-dir": str(out),
        },
        output_dir=out,
        result_file=out / "result.json",
        workdir=out,
    )


def build_dataset_spec(config: ModelConfig, ctx: RunContext, store: LocalStore) -> JobSpec:
    """The Spark ETL: clean, dedupe, decontaminate, split, version."""
    out = try_dir(store, config, ctx, "build_dataset")
    data = config.data
    return JobSpec(
        name="build_dataset",
        kind="glue",
        script=INCLUDE_DIR / "etl" / "build_dataset.py",
        arguments={
            "model": config.name,
            **_raw_data_arguments(config, ctx, store),
            "golden-version": data.golden_version,
            "expected-golden-sha256": data.golden_sha256 or "",
            "validation-fraction": str(data.validation_fraction),
            "result-file": str(out / "result.json"),
        },
        result_file=out / "result.json",
        workdir=out,
    )


def tracking_env(store: LocalStore) -> dict[str, str]:
    """MLflow settings of a job: the tracking URI, and the artifact root under this store (never the job's working directory)."""
    return {"MLFLOW_TRACKING_URI": mlflow_tracking_uri(), ARTIFACT_ROOT_ENV: artifact_root(store.root)}


def train_model_spec(config: ModelConfig, ctx: RunContext, store: LocalStore) -> JobSpec:
    """Script-mode training on the dataset version that build_dataset produced."""
    built = ctx.upstream["build_dataset"]
    version_dir = store.path(f"datasets/{config.name}/{built['dataset_version']}")
    base = try_dir(store, config, ctx, "train_model")
    hyperparameters = {key: str(value) for key, value in config.training.hyperparameters.items()}
    hyperparameters.update(
        {
            "task": config.task,
            "base-model": config.training.base_model,
            "dataset-version": built["dataset_version"],
            "config-digest": config.digest(),
            "labels-file": _path_of(config.data.labels_file),
            **({"corpus-file": _path_of(config.data.corpus_file)} if config.data.corpus_file else {}),
            "experiment-name": ctx.dag_id,
            "run-name": f"{ctx.dag_id}/{ctx.run_key}",
        }
    )
    tags = lineage(config, ctx, built["dataset_version"])
    return JobSpec(
        name="train_model",
        kind="training",
        script=INCLUDE_DIR / "training" / "train.py",
        arguments={key.replace("_", "-"): value for key, value in hyperparameters.items()},
        channels={"train": version_dir / "train", "validation": version_dir / "validation"},
        model_dir=base / "model",
        output_dir=base / "output",
        checkpoint_dir=checkpoint_dir(store, config, ctx, built["dataset_version"]),
        env={**tracking_env(store), "RETRAIN_LINEAGE": _json(tags)},
        result_file=base / "model" / "training_summary.json",
        workdir=base,
    )


def evaluate_model_spec(config: ModelConfig, ctx: RunContext, store: LocalStore, champion_store: Any = None) -> JobSpec:
    """Score challenger and champion on the pinned golden set, in one run.

    The champion is read from ``champion_store``'s ledger (default ``store``): on AWS the
    paths are computed against one root while the ledger lives in S3."""
    trained = ctx.upstream["train_model"]
    out = try_dir(store, config, ctx, "evaluate_model")
    latency = config.evaluation.latency
    arguments = {
        "challenger-dir": trained["model_dir"],
        "challenger-digest": trained["weights_digest"],
        "golden-dir": str(store.path(f"golden/{config.name}/{config.data.golden_version}")),
        "output-dir": str(out),
        "batch-size": str(config.evaluation.batch_size),
        "latency-requests": str(latency.requests),
        "latency-warmup": str(latency.warmup),
        "latency-threads": str(latency.threads),
        "mlflow-run-id": trained.get("mlflow_run_id") or "",
        "expected-golden-sha256": config.data.golden_sha256 or "",
        "task": config.task,
        "task-options": _json(config.evaluation.task_options()),
    }
    champion = ledger.current_champion(store if champion_store is None else champion_store, config.name)
    if champion is not None:
        arguments["champion-dir"] = champion["model_dir"]
        arguments["champion-version"] = str(champion["to_version"])
        arguments["champion-digest"] = champion.get("weights_digest") or ""  # entries before digests were recorded have none
    return JobSpec(
        name="evaluate_model",
        kind="processing",
        script=INCLUDE_DIR / "eval" / "evaluate.py",
        arguments=arguments,
        output_dir=out,
        env=tracking_env(store),
        result_file=out / "metrics.json",
        workdir=out,
    )


def _registry_spec(config: ModelConfig, ctx: RunContext, store: LocalStore, name: str, command: str, arguments: dict[str, str]) -> JobSpec:
    """The registry runs where mlflow is installed: the job environment (on AWS, SageMaker's registry)."""
    out = try_dir(store, config, ctx, name)
    return JobSpec(
        name=name,
        kind="processing",
        script=PROJECT_ROOT / "plugins" / "retrain" / "registry.py",
        arguments={"command": command, "model": config.name, **arguments, "result-file": str(out / "result.json")},
        env={**tracking_env(store), "RETRAIN_HOME": str(store.root)},
        result_file=out / "result.json",
        workdir=out,
    )


def register_model_spec(config: ModelConfig, ctx: RunContext, store: LocalStore) -> JobSpec:
    """Register the gated challenger with lineage tags and its evidence; alias it challenger."""
    trained, evaluated, gated = (ctx.upstream[k] for k in ("train_model", "evaluate_model", "gate_on_metrics"))
    tags = {**lineage(config, ctx, trained["dataset_version"]), "weights_digest": trained["weights_digest"],
            "gate_digest": gated["digest"],
            **{f"golden_{metric}": f"{evaluated['challenger'][metric]:.6f}" for metric in TASK_TYPES[config.task]},
            # a model that stores only an adapter records the digest of the base weights it needs (causal_lm_lora)
            **({"base_model_digest": trained["base_model_digest"]} if trained.get("base_model_digest") else {})}
    evidence = {"metrics": evaluated["metrics_path"], "report": gated["report_path"], "gate": gated["gate_path"]}
    return _registry_spec(config, ctx, store, "register_model", "register", {
        "task": config.task, "model-dir": trained["model_dir"], "run-id": trained["mlflow_run_id"],
        "tags-json": _json(tags), "evidence-json": _json(evidence),
    })


def promote_model_spec(config: ModelConfig, ctx: RunContext, store: LocalStore) -> JobSpec:
    """Move champion to the approved version; the approver from the approval response is the actor."""
    registered, approval, gated = (ctx.upstream[k] for k in ("register_model", "await_approval", "gate_on_metrics"))
    actor = (approval.get("responded_by_user") or {}).get("id")
    if not actor:
        raise ValueError("promote_model needs the approver's identity from await_approval; none was recorded")
    reason = (approval.get("params_input") or {}).get("reason") or f"approved in {ctx.dag_id} run {ctx.run_id}"
    return _registry_spec(config, ctx, store, "promote_model", "promote", {
        "version": str(registered["version"]), "actor": actor, "reason": reason,
        "gate-digest": gated["digest"], "run-id": ctx.run_id, "gated-champion": str(gated.get("champion_version") or ""),
    })


def reject_model_spec(config: ModelConfig, ctx: RunContext, store: LocalStore, version: int, actor: str | None, reason: str) -> JobSpec:
    """Record a rejection or a timeout and clear challenger."""
    return _registry_spec(config, ctx, store, "reject_model", "reject", {"version": str(version), "actor": actor or "", "reason": reason})


def rollback_model_spec(config: ModelConfig, ctx: RunContext, store: LocalStore, target: int | None, actor: str, reason: str) -> JobSpec:
    """Move champion back (default: the previous champion in the ledger)."""
    return _registry_spec(config, ctx, store, "rollback_model", "rollback", {
        "task": config.task, "target-version": "" if target is None else str(target), "actor": actor, "reason": reason,
    })


def summarize_metrics(metrics: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """What downstream tasks need of metrics.json; the per-example arrays stay in the file, not in XCom."""
    def brief(block):
        keys = (*TASK_TYPES[metrics.get("task", "text_classification")], "latency_ms", "version", "model_dir")
        return None if block is None else {k: block.get(k) for k in keys}

    return {
        "metrics_path": str(spec.result_file),
        "report_path": str(spec.result_file.parent / "report.html"),
        "golden_version": metrics["golden_version"],
        "n_examples": metrics["n_examples"],
        "challenger": brief(metrics["challenger"]),
        "champion": brief(metrics.get("champion")),
    }


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


SPEC_BUILDERS = {
    "validate_raw": validate_raw_spec,
    "build_dataset": build_dataset_spec,
    "train_model": train_model_spec,
    "evaluate_model": evaluate_model_spec,
    "register_model": register_model_spec,
    "promote_model": promote_model_spec,
}
XCOM_SUMMARIES = {"evaluate_model": summarize_metrics}
