"""``build_retraining_dag(config)``: one DAG per model, the same shape on every backend.

Parse-time cost matters (the scheduler re-parses DAG files continuously), so this module
imports only the Airflow SDK and the config schema; operators import their heavy
dependencies inside ``execute``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, chain

from retrain.config import ConfigError, ModelConfig, load_model_among_all
from retrain.paths import config_dir
from retrain.user_input import REASON_MAX_CHARS, REASON_PATTERN

JOB_TASKS = ("validate_raw", "build_dataset", "train_model", "evaluate_model", "register_model", "promote_model")
UPSTREAM_RESULTS = {
    "validate_raw": ("snapshot_raw",),
    "build_dataset": ("snapshot_raw",),
    "train_model": ("build_dataset",),
    "evaluate_model": ("train_model",),
    "register_model": ("train_model", "evaluate_model", "gate_on_metrics"),
    "promote_model": ("register_model", "await_approval", "gate_on_metrics"),
}

APPROVAL_BODY = """\
**{{ dag.dag_id }}**: challenger v{{ ti.xcom_pull(task_ids='register_model')['version'] }} from run `{{ run_id }}`.

Gate: **{{ ti.xcom_pull(task_ids='gate_on_metrics')['decision'] }}**

```
{{ ti.xcom_pull(task_ids='gate_on_metrics')['table'] }}
```

Report: `{{ ti.xcom_pull(task_ids='gate_on_metrics')['report_path'] }}`

Approve to start its staged rollout on the endpoint (local backend: shadow, then canary, then 100%, rolled back
automatically on a breach) and make it the champion; Reject (or no answer before the timeout) clears `challenger` and
leaves the champion serving.
"""

DOC = """
### {dag_id}

{description}

1. `snapshot_raw` freezes the raw partitions up to the end of the data interval (file hashes, row counts).
2. `validate_raw` runs the Great Expectations suite; bad data stops the run with a report.
3. `build_dataset` (Spark) cleans, dedupes, removes golden-set overlap, splits by key hash and writes a
   content-addressed dataset version.
4. `check_drift` skips training when drift is below {threshold} and a champion serves (param `force` overrides).
5. `train_model` runs the training script under the SageMaker container contract.
6. `evaluate_model` scores challenger and champion on golden version `{golden}`, writing `metrics.json` and
   `report.html`.
7. `gate_on_metrics` applies the gate policy and writes `gate.json`; a rejection fails here, alerts, and is not retried.
8. `register_model` creates an MLflow model version with lineage tags and evidence, alias `challenger`.
9. `await_approval` waits for one of {approvers} (timeout {timeout}h counts as a rejection).
10. `deploy_shadow` → `observe_shadow` → `start_canary` → `observe_canary` on the model's endpoint (the local model
    server, or SageMaker on aws; windows in the config's `deployment` section); a breach rolls back to the champion
    automatically.
11. `promote_model` moves alias `champion`, appends the hash-chained ledger and serves the version at 100%.

Roll back with `rollback_{name}`.

Backend: `{backend}`. Config: `config/models/{name}.yaml` (digest `{digest}`).
"""


def _job_task_args(config: ModelConfig) -> dict:
    """Retries with exponential backoff for the job tasks (their failures are often transient), and
    at most one instance of each job task across all runs of the DAG: a backfill creates many
    runs at once (its own max_active_runs, 10 by default), and two training jobs at once on a
    small machine slow each other many times over."""
    return {
        "retries": config.dag.retries,
        "retry_delay": timedelta(seconds=config.dag.retry_delay_seconds),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(seconds=config.dag.max_retry_delay_seconds),
        "execution_timeout": timedelta(minutes=config.dag.job_timeout_minutes),
        "max_active_tis_per_dag": 1,
    }


def alert_notifier(config: ModelConfig, message: str | None = None, backend: str | None = None):
    """The model's notifier: every final task failure goes through it, with the run link and the reason.

    local: a JSON line per alert under the store. aws: Slack when ``aws.alerts.slack_webhook_conn_id``
    is set, else the provider's SnsNotifier on ``aws.alerts.sns_topic_arn``.
    """
    extra = {"message": message} if message else {}
    if (backend or selected_backend()) == "local":
        from retrain_airflow.notifiers import FileAlertNotifier

        return FileAlertNotifier(model_name=config.name, **extra)
    aws = _require_aws(config)
    if aws.alerts.slack_webhook_conn_id:
        import importlib.util

        from retrain_airflow.notifiers import SlackAlertNotifier

        if importlib.util.find_spec("airflow.providers.slack") is None:  # checked without importing it
            raise ConfigError(
                f"{config.name}: field 'aws.alerts.slack_webhook_conn_id' needs apache-airflow-providers-slack, "
                "which is not installed; add it to requirements.txt or use aws.alerts.sns_topic_arn"
            )
        return SlackAlertNotifier(
            model_name=config.name, slack_webhook_conn_id=aws.alerts.slack_webhook_conn_id, **extra
        )
    if aws.alerts.sns_topic_arn:
        from retrain_airflow.aws_notifiers import AlertSnsNotifier

        return AlertSnsNotifier(
            model_name=config.name, topic_arn=aws.alerts.sns_topic_arn, region_name=aws.region, **extra
        )
    raise ConfigError(
        f"{config.name}: field 'aws.alerts': set sns_topic_arn or slack_webhook_conn_id; "
        "on the aws backend failures and gate rejections must reach a person"
    )


def _require_aws(config: ModelConfig):
    """The config's aws section; ConfigError naming the file and field ``aws`` when it has none."""
    if config.aws is None:
        raise ConfigError(
            f"{config_dir() / (config.name + '.yaml')}: field 'aws': RETRAIN_BACKEND=aws needs the model's "
            "aws section (region, role_arn, buckets, glue, training, processing, ...)"
        )
    return config.aws


def uses_fab_auth() -> bool:
    """Whether Airflow's auth manager is FAB's (MWAA's), which matches HITL approvers by numeric user id."""
    from airflow.configuration import conf

    return "fab" in conf.get("core", "auth_manager", fallback="").lower()


def _local_job_task(config: ModelConfig, task_id: str):
    from retrain_airflow.operators import LocalJobOperator

    return LocalJobOperator(
        task_id=task_id,
        model_name=config.name,
        job=task_id,
        upstream_results=UPSTREAM_RESULTS[task_id],
        **_job_task_args(config),
    )


def _aws_job_task(config: ModelConfig, task_id: str):
    # Imported here: the provider's operators load boto3, which the local backend never needs.
    from retrain_airflow.aws_operators import aws_job_operator

    _require_aws(config)
    return aws_job_operator(config, task_id, UPSTREAM_RESULTS[task_id], _job_task_args(config))


JOB_TASK_BUILDERS = {"local": _local_job_task, "aws": _aws_job_task}


def selected_backend() -> str:
    """The backend chosen by configuration at parse time (``RETRAIN_BACKEND``, default local)."""
    backend = os.environ.get("RETRAIN_BACKEND", "local")
    if backend not in JOB_TASK_BUILDERS:
        raise ConfigError(f"RETRAIN_BACKEND={backend!r} is not one of {sorted(JOB_TASK_BUILDERS)}")
    return backend


def build_retraining_dag(config: ModelConfig, backend: str | None = None) -> DAG:
    """The retrain_<model> DAG: snapshot → validate → build → drift check → train → evaluate
    → gate → register → approval → promote."""
    from airflow.providers.standard.operators.python import ShortCircuitOperator

    from retrain_airflow.operators import ApproveModelOperator, GateOnMetricsOperator, SnapshotRawOperator, should_train

    backend = backend or selected_backend()
    job_task = JOB_TASK_BUILDERS[backend]
    if backend == "aws":
        _require_aws(config)
        from retrain_airflow.aws_operators import AwsApproveModelOperator as approval_operator
    else:
        approval_operator = ApproveModelOperator
    try:
        approvers = config.approval.approvers(by_fab_id=uses_fab_auth())
    except ValueError as exc:
        raise ConfigError(f"{config_dir() / (config.name + '.yaml')}: {exc}") from None
    notifier = alert_notifier(config, backend=backend)
    start = datetime.combine(config.schedule.start_date, datetime.min.time(), tzinfo=UTC)
    with DAG(
        dag_id=config.dag_id,
        description=config.description or f"Retrain the {config.name} model",
        doc_md=DOC.format(
            dag_id=config.dag_id,
            description=config.description,
            threshold=config.data.drift_threshold,
            golden=config.data.golden_version,
            backend=backend,
            name=config.name,
            digest=config.digest()[:12],
            approvers=", ".join(config.approval.assigned_users),
            timeout=config.approval.response_timeout_hours,
        ),
        schedule=CronDataIntervalTimetable(config.cron, timezone="UTC"),
        start_date=start,
        catchup=config.schedule.catchup,
        max_active_runs=config.dag.max_active_runs,
        # on_failure_callback fires once a task has failed for good (after its last retry).
        default_args={"owner": config.dag.owner, "retries": 0, "on_failure_callback": notifier},
        tags=sorted({"retrain", config.name, config.schedule.cadence, backend, *config.dag.tags}),
        params={
            "force": Param(False, type="boolean", description="Train even when drift is below the threshold."),
        },
        render_template_as_native_obj=True,
    ) as dag:
        snapshot = SnapshotRawOperator(task_id="snapshot_raw", model_name=config.name)
        validate = job_task(config, "validate_raw")
        build = job_task(config, "build_dataset")
        check_drift = ShortCircuitOperator(
            task_id="check_drift", python_callable=should_train, op_kwargs={"model_name": config.name}
        )
        train = job_task(config, "train_model")
        evaluate = job_task(config, "evaluate_model")
        gate = GateOnMetricsOperator(task_id="gate_on_metrics", model_name=config.name)
        register = job_task(config, "register_model")
        approval = approval_operator(
            task_id="await_approval",
            model_name=config.name,
            subject=f"Promote the {config.name} challenger to champion?",
            body=APPROVAL_BODY,
            assigned_users=approvers,
            response_timeout=timedelta(hours=config.approval.response_timeout_hours),
            defaults="Reject",
            params={
                "reason": Param(
                    "",
                    type="string",
                    maxLength=REASON_MAX_CHARS,
                    pattern=REASON_PATTERN,
                    description="Why you approve or reject, on one line (goes to the ledger and the model registry).",
                )
            },
        )
        stages = deployment_stages(config, backend)
        promote = _local_promote(config) if backend == "local" else job_task(config, "promote_model")
        chain(snapshot, validate, build, check_drift, train, evaluate, gate, register, approval, *stages, promote)
    return dag


OBSERVE_RETRY = {"retries": 1, "retry_delay": timedelta(seconds=15)}
"""The observe tasks defer, and Airflow 3.3.1 can fail a deferred task that resumes quickly: when the trigger fires
before the scheduler has drained the executor's success event of the worker that deferred, the scheduler finds the
resumed try queued or running and marks it failed, "state mismatch" (apache/airflow#72716; seen here under load, a
5 s shadow window). One retry covers it: ``execute`` only re-defers on the stage its upstream recorded, and the
trigger judges the window from that stage's start, so a retry decides what the first try would have. A verdict (a
breach, an inconclusive window) raises AirflowFailException, which Airflow never retries."""


def deployment_stages(config: ModelConfig, backend: str = "local") -> list:
    """deploy_shadow -> observe_shadow -> start_canary -> observe_canary: on the model server's endpoint
    (retrain_airflow.deployment) locally, on the model's SageMaker endpoint (retrain_airflow.aws_deployment) on aws.
    The same task ids, arguments and dependencies on both."""
    if backend == "aws":
        from retrain_airflow.aws_deployment import AwsDeployShadowOperator as DeployShadowOperator
        from retrain_airflow.aws_deployment import AwsObserveOperator as ObserveOperator
        from retrain_airflow.aws_deployment import AwsStartCanaryOperator as StartCanaryOperator
    else:
        from retrain_airflow.deployment import DeployShadowOperator, ObserveOperator, StartCanaryOperator

    shadow, canary = config.deployment.shadow, config.deployment.canary
    return [
        DeployShadowOperator(task_id="deploy_shadow", model_name=config.name),
        ObserveOperator(
            task_id="observe_shadow",
            model_name=config.name,
            variant="shadow",
            upstream="deploy_shadow",
            **OBSERVE_RETRY,
            doc_md=f"Until {shadow.min_requests} copies were compared, at most {shadow.max_minutes:g} min.",
        ),
        StartCanaryOperator(task_id="start_canary", model_name=config.name),
        ObserveOperator(
            task_id="observe_canary",
            model_name=config.name,
            variant="canary",
            upstream="start_canary",
            **OBSERVE_RETRY,
            doc_md=f"{canary.percent:g}% of traffic for {canary.window_minutes:g} min; at least {canary.min_requests} "
            "requests.",
        ),
    ]


def _local_promote(config: ModelConfig):
    from retrain_airflow.deployment import PromoteModelOperator

    return PromoteModelOperator(
        task_id="promote_model",
        model_name=config.name,
        job="promote_model",
        upstream_results=UPSTREAM_RESULTS["promote_model"],
        **_job_task_args(config),
    )


def build_rollback_dag(config: ModelConfig, backend: str | None = None) -> DAG:
    """rollback_<model>: triggered by hand; moves champion back and appends the ledger."""
    backend = backend or selected_backend()
    if backend == "aws":
        _require_aws(config)
        from retrain_airflow.aws_operators import AwsRollbackModelOperator as RollbackModelOperator
    else:
        from retrain_airflow.operators import RollbackModelOperator

    with DAG(
        dag_id=f"rollback_{config.name}",
        description=f"Roll the {config.name} champion back to an earlier champion",
        doc_md="Trigger with a **reason**; **target_version** defaults to the previous champion in "
        f"`ledger/{config.name}.jsonl`. "
        "A version that was never champion, or does not exist, is refused and nothing changes.",
        schedule=None,
        start_date=datetime.combine(config.schedule.start_date, datetime.min.time(), tzinfo=UTC),
        catchup=False,
        is_paused_upon_creation=False,  # manual-only: unpaused, so one click runs it
        max_active_runs=1,
        default_args={
            "owner": config.dag.owner,
            "retries": 0,
            "on_failure_callback": alert_notifier(config, backend=backend),
        },
        tags=sorted({"retrain", "rollback", config.name}),
        params={
            "target_version": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                description="Version to restore; empty = the previous champion.",
            ),
            "reason": Param(
                type="string",
                minLength=3,
                maxLength=REASON_MAX_CHARS,
                pattern=REASON_PATTERN,
                description="Why, on one line (required; goes to the ledger and the model registry).",
            ),
        },
    ) as dag:
        RollbackModelOperator(task_id="rollback_model", model_name=config.name)
    return dag


def model_dags(name: str) -> dict[str, DAG]:
    """``retrain_<name>`` and ``rollback_<name>`` from ``<config dir>/<name>.yaml``, for a model's DAG file.

    A broken config raises ConfigError naming the file and the field; raised while the DAG
    file is imported, it becomes that file's import error in the UI, the REST API and
    ``airflow dags list-import-errors``, while every other model's DAG file loads on its own. A config that shares
    a field that must be unique per model (``retrain.config.UNIQUE_PER_MODEL``) with another is refused the same way.
    """
    config = load_model_among_all(name)
    return {config.dag_id: build_retraining_dag(config), f"rollback_{config.name}": build_rollback_dag(config)}
