"""The model registry on MLflow: register, approve/reject, promote, roll back, status.

Runs in the job environment (it imports mlflow), started by the local runner like any
job, or by hand:

    .venv-jobs/bin/python plugins/retrain/registry.py status --model intent

Aliases carry the state: ``challenger`` marks a registered, gated version awaiting a
decision; ``champion`` marks the serving version. Every change of ``champion`` is also
appended to the hash-chained ledger (retrain.ledger), which is the audit trail.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from retrain import ledger, tracking
from retrain.paths import INCLUDE_DIR
from retrain.store import LocalStore
from retrain.tasks import task_module

CHALLENGER, CHAMPION = "challenger", "champion"
MODEL_REQUIREMENTS = ["torch==2.13.0", "transformers==5.23.0", "safetensors==0.8.0", "numpy", "pandas"]


class RegistryError(ValueError):
    """A registry request is invalid; nothing was changed."""


def _client():
    from mlflow import MlflowClient

    from retrain.tracking import ready_store

    ready_store()
    return MlflowClient()


def alias_version(name: str, alias: str) -> int | None:
    """The version an alias points to, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return int(_client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def register(
    name: str, task: str, model_dir: str, run_id: str, tags: dict[str, str], evidence: dict[str, str]
) -> dict[str, Any]:
    """Log the model directory into its training run, register it, tag its lineage, alias it challenger."""
    import mlflow

    client = _client()
    tracking.check_experiment(client.get_experiment(client.get_run(run_id).info.experiment_id))
    for path in evidence.values():
        client.log_artifact(run_id, path, "evaluation")
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(INCLUDE_DIR / "retrain_jobs" / "mlflow_model.py"),
            artifacts={"model": model_dir},
            code_paths=[str(INCLUDE_DIR / "retrain_jobs")],
            pip_requirements=MODEL_REQUIREMENTS,
            # serving loads through the task type's module and refuses other weights
            model_config={"weights_digest": tags.get("weights_digest", ""), "task": task},
        )
    version = mlflow.register_model(info.model_uri, name, tags={**tags, "task": task})
    artifact_root = client.get_run(run_id).info.artifact_uri
    for key, path in evidence.items():
        client.set_model_version_tag(
            name, version.version, f"evidence.{key}", f"{artifact_root}/evaluation/{Path(path).name}"
        )
    client.set_model_version_tag(name, version.version, "model_dir", model_dir)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return {
        "name": name,
        "version": int(version.version),
        "model_uri": f"models:/{name}/{version.version}",
        "alias": CHALLENGER,
    }


def reject(name: str, version: int, actor: str | None, reason: str) -> dict[str, Any]:
    """Record a rejection (or a timeout) and clear ``challenger``; the champion is untouched."""
    client = _client()
    client.set_model_version_tag(name, str(version), "approval", "rejected")
    client.set_model_version_tag(name, str(version), "approval.actor", actor or "timeout")
    client.set_model_version_tag(name, str(version), "approval.reason", reason)
    if alias_version(name, CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    return {"name": name, "version": version, "decision": "rejected", "champion": alias_version(name, CHAMPION)}


def promote(
    store: LocalStore,
    name: str,
    version: int,
    actor: str,
    reason: str,
    gate_digest: str | None,
    run_id: str | None,
    gated_champion: int | None,
) -> dict[str, Any]:
    """Move ``champion`` to an approved version and append the ledger entry.

    Refuses, changing nothing, unless the champion the gate compared against is still the
    champion: two overlapping runs gated against the same (or no) champion must not both
    be promoted, the second over a champion its gate never saw."""
    client = _client()
    mv = client.get_model_version(name, str(version))
    entries = ledger.verify(store, name)  # refuse to build on a tampered ledger
    serving = ledger.serving_champion(entries)
    if serving != gated_champion:
        raise RegistryError(
            f"{name} v{version} was gated against "
            f"{'no champion' if gated_champion is None else f'champion v{gated_champion}'}, "
            f"but the champion is now v{serving}: its gate never saw the serving champion; nothing was changed. "
            f"Clear evaluate_model (and downstream) in run {run_id} to re-evaluate against v{serving}."
        )
    client.set_registered_model_alias(name, CHAMPION, str(version))
    if alias_version(name, CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, str(version), "approval", "approved")
    client.set_model_version_tag(name, str(version), "approval.actor", actor)
    entry = ledger.append(
        store,
        name,
        action="promote",
        to_version=version,
        actor=actor,
        reason=reason,
        model_dir=mv.tags["model_dir"],
        gate_digest=gate_digest,
        run_id=run_id,
        weights_digest=mv.tags.get("weights_digest"),
    )
    return {"name": name, "champion": version, "ledger_entry": entry}


def verify_weights(name: str, task: str, version: int, model_dir: str, digest: str | None) -> None:
    """Load a version's model directory through its task type and check its weights against the recorded digest;
    refuse on any difference."""
    if not digest:
        raise RegistryError(
            f"{name} v{version} has no recorded weights digest; refusing to serve weights nobody can verify"
        )
    from retrain_jobs.base import WeightsMismatch

    try:
        task_module("train", task).load(model_dir, digest)
    except WeightsMismatch as exc:
        raise RegistryError(f"{name} v{version}: {exc}; nothing was changed") from None
    except OSError as exc:
        raise RegistryError(
            f"{name} v{version}: its model directory cannot be read ({exc}); nothing was changed"
        ) from None


def rollback(store: LocalStore, name: str, task: str, target: int | None, actor: str, reason: str) -> dict[str, Any]:
    """Move ``champion`` back to a version that served before; refuses anything else, changing nothing."""
    if not reason.strip():
        raise RegistryError("a rollback needs a reason")
    entries = ledger.verify(store, name)
    current = ledger.serving_champion(entries)
    if current is None:
        raise RegistryError(f"{name} has never had a champion; nothing to roll back")
    target = ledger.previous_champion(entries) if target is None else int(target)
    if target is None:
        raise RegistryError(f"{name} v{current} is the first champion in the ledger; there is no previous champion")
    served = {e["to_version"]: e for e in ledger.champion_entries(entries)}
    if target not in served:
        known = ", ".join(f"v{v}" for v in sorted(served))
        raise RegistryError(
            f"{name} v{target} was never champion (champions in the ledger: {known}); refusing to roll back"
        )
    if target == current:
        raise RegistryError(f"{name} v{target} is already the champion")
    from mlflow.exceptions import MlflowException

    try:
        mv = _client().get_model_version(name, str(target))
    except MlflowException:
        raise RegistryError(f"{name} v{target} does not exist in the registry") from None
    digest = served[target].get("weights_digest") or mv.tags.get("weights_digest")
    verify_weights(name, mv.tags.get("task") or task, target, served[target]["model_dir"], digest)
    _client().set_registered_model_alias(name, CHAMPION, str(target))
    entry = ledger.append(
        store,
        name,
        action="rollback",
        to_version=target,
        actor=actor,
        reason=reason,
        model_dir=served[target]["model_dir"],
        gate_digest=served[target].get("gate_digest"),
        weights_digest=digest,
    )
    return {"name": name, "champion": target, "previous": current, "ledger_entry": entry}


def status(store: LocalStore, name: str) -> dict[str, Any]:
    """Aliases, versions with their decision, and the ledger (verified)."""
    client = _client()
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except Exception:  # noqa: BLE001 - no registered model yet
        versions = []
    try:
        entries, verified = ledger.verify(store, name), True
    except ledger.LedgerError as exc:
        entries, verified = ledger.read_entries(store, name), str(exc)
    return {
        "name": name,
        "champion": alias_version(name, CHAMPION),
        "challenger": alias_version(name, CHALLENGER),
        "versions": sorted(
            (
                {
                    "version": int(v.version),
                    "approval": v.tags.get("approval", "pending"),
                    "dataset_version": v.tags.get("dataset_version"),
                    "airflow_run_id": v.tags.get("airflow_run_id"),
                    "created": v.creation_timestamp,
                }
                for v in versions
            ),
            key=lambda v: v["version"],
        ),
        "ledger": entries,
        "ledger_verified": verified,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="registry.py", description="Model registry operations on MLflow (job environment)."
    )
    commands = ["register", "reject", "promote", "rollback", "status"]
    parser.add_argument("command", nargs="?", choices=commands, help="what to do")
    parser.add_argument(
        "--command", dest="command_flag", choices=commands, help="the same, as a --key value job argument"
    )
    parser.add_argument("--model", required=True, help="registered model name (the model config's name)")
    parser.add_argument("--task", default="text_classification", help="register, rollback: the config's task type")
    parser.add_argument("--version", type=int, help="model version")
    parser.add_argument("--model-dir", help="register: the trained model directory")
    parser.add_argument("--run-id", help="register: the MLflow training run; promote: the Airflow run id")
    parser.add_argument("--tags-json", default="{}", help="register: lineage tags as JSON")
    parser.add_argument(
        "--evidence-json", default="{}", help="register: {name: file} to attach (metrics, report, gate)"
    )
    parser.add_argument("--actor", default="", help="who decided (an Airflow user id)")
    parser.add_argument("--reason", default="", help="why")
    parser.add_argument("--gate-digest", default=None)
    parser.add_argument(
        "--gated-champion", default=None, help="promote: the champion version the gate compared against ('' for none)"
    )
    parser.add_argument(
        "--target-version", default="", help="rollback: version to restore (default: the previous champion)"
    )
    parser.add_argument("--result-file", help="write the result JSON here")
    args = parser.parse_args(argv)
    args.command = args.command or args.command_flag
    if not args.command:
        parser.error("a command is required")
    store = LocalStore()
    try:
        if args.command == "register":
            result = register(
                args.model,
                args.task,
                args.model_dir,
                args.run_id,
                json.loads(args.tags_json),
                json.loads(args.evidence_json),
            )
        elif args.command == "reject":
            result = reject(args.model, args.version, args.actor or None, args.reason)
        elif args.command == "promote":
            if args.gated_champion is None:
                raise RegistryError(
                    "promote needs --gated-champion: the champion version its gate compared against ('' for none)"
                )
            gated = int(args.gated_champion) if args.gated_champion else None
            result = promote(
                store, args.model, args.version, args.actor, args.reason, args.gate_digest, args.run_id, gated
            )
        elif args.command == "rollback":
            result = rollback(
                store,
                args.model,
                args.task,
                int(args.target_version) if args.target_version else None,
                args.actor,
                args.reason,
            )
        else:
            result = status(store, args.model)
    except (RegistryError, ledger.LedgerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 65  # os.EX_DATAERR: the request itself is wrong; retrying cannot help
    text = json.dumps(result, indent=2, default=str)
    if args.result_file:
        Path(args.result_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.result_file).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
