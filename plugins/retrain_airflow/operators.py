"""Thin Airflow operators of the local backend (the aws backend subclasses some in aws_operators). The work happens in
retrain.* and the job scripts."""

from __future__ import annotations

import logging
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import BaseOperator

log = logging.getLogger(__name__)


class ModelOperator(BaseOperator):
    """A retrain operator acts for one model, named by its config."""

    def __init__(self, *, model_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name


def run_context(context: Any, upstream: tuple[str, ...] = ()):
    """The RunContext that job specs are built from, read off the Airflow context at run time."""
    from retrain.jobs import RunContext

    ti = context["ti"]
    dag_run = context["dag_run"]
    return RunContext(
        dag_id=dag_run.dag_id,
        run_id=dag_run.run_id,
        interval_start=context.get("data_interval_start"),  # None for manual-only DAGs (rollback)
        interval_end=context.get("data_interval_end"),
        force=bool(context["params"].get("force", False)),
        upstream={task_id: ti.xcom_pull(task_ids=task_id) for task_id in upstream},
        try_number=int(getattr(ti, "try_number", None) or 1),
    )


class SnapshotRawOperator(ModelOperator):
    """snapshot_raw: freeze the raw partitions of the run's data interval into a manifest."""

    ui_color = "#e8f4fa"

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from retrain.config import load_model
        from retrain.jobs import try_key, write_once_json
        from retrain.snapshot import snapshot_raw
        from retrain.store import get_store
        from retrain.user_input import InputRefused, check_run_id

        ctx = run_context(context)
        try:  # before any job starts: the run id reaches AWS requests (lineage, model package metadata)
            check_run_id(ctx.run_id)
        except InputRefused as exc:
            raise AirflowFailException(str(exc)) from None
        config, store = load_model(self.model_name), get_store()
        manifest = snapshot_raw(store, config.name, ctx.interval_start, ctx.interval_end)
        location = write_once_json(store, f"{try_key(config, ctx, 'snapshot_raw')}/raw_manifest.json", manifest)
        self.log.info(
            "snapshot of %s: %d file(s), %d rows (%d in this interval), partitions %s",
            config.name,
            len(manifest["files"]),
            manifest["total_rows"],
            manifest["interval_rows"],
            ", ".join(manifest["partitions"]),
        )
        return {
            "manifest_path": location,
            "manifest_sha256": manifest["manifest_sha256"],
            "total_rows": manifest["total_rows"],
            "interval_rows": manifest["interval_rows"],
        }


class LocalJobOperator(ModelOperator):
    """Runs one job script (validate, ETL, train, evaluate) in the job environment.

    The job spec is built at run time from the model config and upstream results;
    the local runner starts the script under the SageMaker/Glue container contract and
    streams its output into this task's log. The job's result JSON becomes the XCom.
    """

    ui_color = "#fdf1e0"

    def __init__(self, *, job: str, upstream_results: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job = job
        self.upstream_results = upstream_results

    def execute(self, context: Any) -> dict[str, Any]:
        from retrain.config import load_model
        from retrain.jobs import XCOM_SUMMARIES, job_spec
        from retrain.runner import local_job
        from retrain.store import get_store

        ctx, store = run_context(context, self.upstream_results), get_store()
        job = local_job(job_spec(self.job, load_model(self.model_name), ctx, store), store)
        result = run_local_job(job, self.log, ctx)
        summarize = XCOM_SUMMARIES.get(self.job)
        return summarize(result, str(job.result_file)) if summarize else result


def run_local_job(spec: Any, task_log: Any, ctx: Any) -> dict[str, Any]:
    """Run a job from a task process that dies with its supervisor; a rejection of its input (EX_DATAERR) fails the
    task without retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from retrain.runner import JobFailed, die_with_parent_process, run_job

    die_with_parent_process()  # a killed supervisor must not leave this task (and its job) running on
    try:
        return run_job(spec, task_log, {"dag_id": ctx.dag_id, "run_id": ctx.run_id, "try_number": ctx.try_number})
    except JobFailed as exc:
        if exc.bad_input:
            raise AirflowFailException(str(exc)) from None  # retrying the same input cannot help
        raise


def should_train(model_name: str, **context: Any) -> bool:
    """check_drift: False (skip training) when drift is below threshold and a champion exists, unless forced."""
    from retrain import ledger
    from retrain.config import load_model
    from retrain.store import get_store

    config = load_model(model_name)
    built = context["ti"].xcom_pull(task_ids="build_dataset")
    # A rebuild that produced an existing version's exact content has not drifted at all.
    score = 0.0 if built.get("reused") else float(built["drift"]["score"])
    champion = ledger.current_champion(get_store(), config.name)
    threshold = config.data.drift_threshold
    if context["params"].get("force"):
        log.info("force=true: training regardless of drift (score %.4f)", score)
        return True
    if champion is None:
        log.info("no champion yet: training the first model of the lineage (drift score %.4f)", score)
        return True
    if score < threshold:
        log.info(
            "drift score %.4f < threshold %.4f and champion v%s serves: skipping training",
            score,
            threshold,
            champion["to_version"],
        )
        return False
    log.info("drift score %.4f >= threshold %.4f: training a challenger", score, threshold)
    return True


class GateOnMetricsOperator(ModelOperator):
    """gate_on_metrics: apply the model's gate policy to metrics.json and write gate.json.

    A rejection fails the task without retries (the same metrics reject again), logs every
    criterion, and fires the task's failure notifier.
    """

    ui_color = "#f3e8fd"

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from retrain.config import load_model
        from retrain.gate import evaluate_gate, format_table
        from retrain.jobs import try_key, write_once_json
        from retrain.store import get_store
        from retrain.verdict import with_verdict

        config, store = load_model(self.model_name), get_store()
        ctx = run_context(context, ("evaluate_model",))
        evaluated = ctx.upstream["evaluate_model"]
        gate = evaluate_gate(config.gate, store.read_json(store.key_of(evaluated["metrics_path"])), config.task)
        gate.update({"model": config.name, "dag_id": ctx.dag_id, "run_id": ctx.run_id})
        out = try_key(config, ctx, "gate_on_metrics")
        path = write_once_json(store, f"{out}/gate.json", gate)
        # The evaluation report with the verdict on top: what a person reads.
        html = with_verdict(store.read_bytes(store.key_of(evaluated["report_path"])).decode("utf-8"), gate)
        store.write_once_bytes(f"{out}/report.html", html.encode("utf-8"))
        report = store.uri(f"{out}/report.html")
        table = format_table(gate)
        for line in table.splitlines():
            self.log.info("%s", line)
        if gate["decision"] != "pass":
            raise AirflowFailException(
                f"gate rejected the challenger: failed {', '.join(gate['failed'])}; see {path} and {report}"
            )
        return {
            "gate_path": path,
            "decision": gate["decision"],
            "digest": gate["digest"],
            "table": table,
            "report_path": report,
            "has_champion": gate["has_champion"],
            "champion_version": gate["champion_version"],
        }


class ApproveModelOperator(ApprovalOperator):
    """await_approval: Airflow's ApprovalOperator, plus what a rejection or timeout must do.

    A named, assigned user answers in the UI or through the REST hitlDetails endpoint.
    Reject, or no answer within the timeout (the default option is Reject), clears the
    ``challenger`` alias and records the decision; the champion is untouched and the
    downstream promote task is skipped.
    """

    def __init__(self, *, model_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        # Record first: on Reject the parent skips downstream by raising, so nothing after it runs.
        if "error" not in event:
            self.record_decision(context, event)
        return super().execute_complete(context=context, event=event)

    def record_decision(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        from retrain.config import load_model

        config = load_model(self.model_name)
        ctx = run_context(context, ("register_model",))
        user = event.get("responded_by_user")
        approved = list(event["chosen_options"]) == [self.APPROVE]
        decision = {
            "decision": "approved" if approved else "rejected",
            "timed_out": bool(event.get("timedout")),
            "responded_by_user": user,
            "responded_at": str(event.get("responded_at")),
            "params_input": event.get("params_input") or {},
            "version": ctx.upstream["register_model"]["version"],
        }
        self.write_decision(config, ctx, decision)
        if not approved:
            reason = decision["params_input"].get("reason") or (
                f"no response within {config.approval.response_timeout_hours}h: counts as a rejection"
                if decision["timed_out"]
                else "rejected by the approver"
            )
            self.reject(config, ctx, decision["version"], (user or {}).get("id"), reason)
            self.log.info("v%s rejected (%s); challenger cleared, champion untouched", decision["version"], reason)
            if decision["timed_out"]:  # nobody decided: a person must hear of it, though the task succeeds
                from retrain_airflow.factory import alert_notifier

                alert_notifier(config, f"approval of v{decision['version']} timed out: counted as a rejection").notify(
                    context, reason
                )
        return decision

    def write_decision(self, config: Any, ctx: Any, decision: dict[str, Any]) -> None:
        """Keep the decision beside the run's other outputs (write-once), in the backend's store."""
        from retrain.jobs import try_key, write_once_json
        from retrain.store import get_store

        write_once_json(get_store(), f"{try_key(config, ctx, 'await_approval')}/decision.json", decision)

    def reject(self, config: Any, ctx: Any, version: int, actor: str | None, reason: str) -> None:
        """Record the rejection in the registry and clear ``challenger`` (the local MLflow registry)."""
        from retrain.jobs import reject_model_spec
        from retrain.runner import local_job
        from retrain.store import get_store

        run_local_job(local_job(reject_model_spec(config, ctx, version, actor, reason), get_store()), self.log, ctx)


class RollbackModelOperator(ModelOperator):
    """rollback_model: move champion back and append the ledger; the triggering user is the actor, and
    must be one of the model's rollback users (else its approvers)."""

    ui_color = "#fde8e8"

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from retrain.config import load_model

        config, params = load_model(self.model_name), context["params"]
        target = params.get("target_version")
        actor = getattr(context["dag_run"], "triggering_user_name", None)
        if not config.approval.may_roll_back(actor):
            raise AirflowFailException(config.approval.rollback_refusal(config.name, actor))
        ctx = run_context(context)
        return self.roll_back(config, ctx, None if target in (None, "") else int(target), actor, params["reason"])

    def roll_back(self, config: Any, ctx: Any, target: int | None, actor: str, reason: str) -> dict[str, Any]:
        """Traffic first, then the record: the endpoint serves the target at once (the model server loads it and
        checks its digest, or refuses and keeps serving), then the registry job moves ``champion`` and appends the
        ledger. Recovery is what a rollback is for, and the job (a fresh process that imports MLflow) takes about 10 s.
        A target the ledger never served as champion gets no traffic: the job refuses it, changing nothing. Should the
        job fail after traffic moved, traffic goes back to the champion it leaves in place."""
        from retrain import ledger
        from retrain.jobs import rollback_model_spec
        from retrain.runner import local_job
        from retrain.store import get_store

        store = get_store()
        entries = ledger.verify(store, config.name)
        current = ledger.serving_champion(entries)
        try:
            resolved, _entry = ledger.rollback_target(config.name, entries, target)
        except ledger.NoRollbackTarget:
            resolved = None  # the job refuses it with the same reason, changing nothing
        moved = None if resolved is None else route_all_traffic(config.name, resolved, self.log)
        try:
            result = run_local_job(
                local_job(rollback_model_spec(config, ctx, target, actor, reason), store), self.log, ctx
            )
        except BaseException:
            if moved is not None and current is not None:
                route_all_traffic(config.name, int(current), self.log)
            raise
        if moved is not None and int(result["champion"]) == resolved:
            return {**result, "serving": moved}
        return {**result, "serving": route_all_traffic(config.name, int(result["champion"]), self.log)}


def route_all_traffic(model: str, version: int, task_log: Any) -> dict[str, Any] | None:
    """Serve ``version`` at 100% of the model server's endpoint (no canary, no shadow). When no server runs, says so:
    the alias has moved, and a server serves the champion when it starts."""
    from retrain.serving import EndpointSpec, ServerUnavailable, ServingClient

    try:
        client = ServingClient()
        client.set_endpoint(EndpointSpec(model, primary=version))
    except ServerUnavailable as exc:
        task_log.warning("%s; v%s serves when the model server starts", exc, version)
        return None
    task_log.info("%s: v%s serves 100%% of the endpoint", model, version)
    return client.endpoint(model)
