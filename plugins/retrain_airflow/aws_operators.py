"""Operators of the aws backend: the Amazon provider's Glue and SageMaker operators, fed at run time.

Each job operator is a thin subclass of the provider's operator. Its ``execute`` first builds
the request from the model config and the run (``retrain.aws.requests``: the same JobSpecs the
local runner uses, mapped onto S3, checked against botocore's service model), sets it on
itself, then hands over to the provider's ``execute``. The request is never a template field:
the DAG renders templates as native objects, which would turn the Glue version "5.0" into a
float. When the job is done, the operator reads the job's result JSON from S3 and returns the
same XCom keys as the local backend (with S3 URIs for locations), so downstream tasks are unchanged.

This module imports the provider (boto3, about half a second) and is imported only when the
factory builds an aws DAG; it makes no AWS call until a task runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from typing import Any

from airflow.providers.amazon.aws.operators.glue import GlueJobOperator
from airflow.providers.amazon.aws.operators.sagemaker import SageMakerProcessingOperator, SageMakerTrainingOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from retrain_airflow.operators import ApproveModelOperator, ModelOperator, RollbackModelOperator, run_context

DEFERRABLE_ENV = "RETRAIN_AWS_DEFERRABLE"  # "false" runs the provider operators synchronously (moto tests)
CHECK_INTERVAL_ENV = "RETRAIN_AWS_CHECK_INTERVAL"
AWS_CONN_ID = "aws_default"


def deferrable() -> bool:
    """Whether job operators defer to the triggerer while a job runs (default: yes, as on MWAA)."""
    value = os.environ.get(DEFERRABLE_ENV, "true").strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise ValueError(f"{DEFERRABLE_ENV}={value!r}: must be true or false")
    return value in ("true", "1")


def check_interval() -> int:
    """Seconds between status polls of a running job."""
    from retrain.aws.requests import DEFAULT_CHECK_INTERVAL

    value = os.environ.get(CHECK_INTERVAL_ENV, str(DEFAULT_CHECK_INTERVAL))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{CHECK_INTERVAL_ENV}={value!r}: must be a whole number of seconds >= 1")
    return int(value)


def _split_s3(uri: str) -> tuple[str, str]:
    from retrain.store import parse_s3_uri

    return parse_s3_uri(uri)


def read_s3_json(uri: str, aws_conn_id: str | None = AWS_CONN_ID) -> Any:
    """A job's result JSON from S3, through the Airflow connection (so its endpoint and role apply)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    bucket, key = _split_s3(uri)
    return json.loads(S3Hook(aws_conn_id=aws_conn_id).read_key(key, bucket))


def read_training_summary(model_data_url: str, aws_conn_id: str | None = AWS_CONN_ID) -> dict[str, Any]:
    """training_summary.json from the model.tar.gz SageMaker made of SM_MODEL_DIR, streamed: the archive holds the
    weights (hundreds of MB for llm_lora's base), and MWAA's workers share 2 GB among their task slots, so only the
    one member is read, and the download stops once it is."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    bucket, key = _split_s3(model_data_url)
    body = S3Hook(aws_conn_id=aws_conn_id).get_key(key, bucket).get()["Body"]
    try:
        with tarfile.open(fileobj=body, mode="r|gz") as archive:  # a stream: members in order, never seeking back
            for member in archive:
                if member.name.lstrip("./") == "training_summary.json":
                    return json.loads(archive.extractfile(member).read())
    finally:
        body.close()
    raise FileNotFoundError(
        f"{model_data_url}: holds no training_summary.json; the training script writes it into SM_MODEL_DIR"
    )


class _RetrainJob:
    """What the three job operators share: the model, the job, its upstream results and the run's context."""

    model_name: str
    job: str
    upstream_results: tuple[str, ...]

    def _setup(self, model_name: str, job: str, upstream_results: tuple[str, ...]) -> None:
        self.model_name, self.job, self.upstream_results = model_name, job, upstream_results

    def run_inputs(self, context: Any):
        """(model config, RunContext, code bundle) of this run."""
        from retrain.aws.requests import code_bundle, require_aws
        from retrain.config import load_model

        config = load_model(self.model_name)
        return config, run_context(context, self.upstream_results), code_bundle(require_aws(config))

    def running_earlier_try(self, context: Any, describe: Callable[[str], dict], status_key: str) -> str | None:
        """The job an earlier try of this task started and AWS still runs (the newest such try), or None.

        A retry after the task stopped polling (a worker restart, a lost trigger, a timeout) waits for that job instead
        of starting a second one on the same checkpoint prefix and paying twice."""
        from retrain.aws.names import job_name

        client_error = self.hook.conn.exceptions.ClientError  # the provider's client's own: no botocore import here

        run_id = context["dag_run"].run_id
        for earlier in range(int(context["ti"].try_number) - 1, 0, -1):
            name = job_name(self.model_name, self.job, run_id, earlier)
            try:
                status = describe(name)[status_key]
            except client_error:
                continue  # that try never got as far as creating its job
            if status == "InProgress":
                return name
        return None

    def attach(self, name: str, job_type: str, describe: Callable[[str], dict], status_key: str) -> dict[str, Any]:
        """Wait for ``name`` as the provider waits for a job it created: deferred to the triggerer (``execute_complete``
        takes over, with the job name from the trigger's event), or polling here; returns its final description."""
        from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger

        self.log.warning(
            "%s: an earlier try's job %s is still running; waiting for it instead of starting another",
            self.task_id,
            name,
        )
        if self.deferrable:
            self.defer(
                trigger=SageMakerTrigger(
                    job_name=name,
                    job_type=job_type,
                    waiter_delay=self.check_interval,
                    waiter_max_attempts=self.max_attempts,
                    aws_conn_id=self.aws_conn_id,
                ),
                method_name="execute_complete",
                timeout=self.execution_timeout,
            )
        return self.hook.check_status(name, status_key, describe, self.check_interval)


def _job_kwargs(model_name: str, job: str, timeout_seconds: int) -> dict[str, Any]:
    from retrain.aws.requests import max_attempts

    interval = check_interval()
    return {
        "aws_conn_id": AWS_CONN_ID,
        "deferrable": deferrable(),
        "max_attempts": max_attempts(timeout_seconds, interval),
        "check_interval": interval,
    }


class RetrainTrainingOperator(_RetrainJob, SageMakerTrainingOperator):
    """train_model: a SageMaker training job whose CreateTrainingJob request is built at run time."""

    template_fields = aws_template_fields()  # the request is built in execute, never rendered

    def __init__(self, *, model_name: str, job: str, upstream_results: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(config={}, action_if_job_exists="fail", **kwargs)
        self._setup(model_name, job, upstream_results)

    def build_config(self, context: Any) -> dict[str, Any]:
        """The validated CreateTrainingJob request for this run and try."""
        from retrain.aws.requests import training_config

        return training_config(*self.run_inputs(context))

    def execute(self, context: Any) -> dict[str, Any]:
        self.config = self.build_config(context)
        describe = self.hook.describe_training_job
        running = self.running_earlier_try(context, describe, "TrainingJobStatus")
        if running:
            self.attach(running, "Training", describe, "TrainingJobStatus")
            return self.summarize(context, self.serialize_result(running))
        return self.summarize(context, super().execute(context))

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        self.config = self.build_config(context)  # a resumed task is a fresh instance
        return self.summarize(context, super().execute_complete(context, event))

    def summarize(self, context: Any, result: dict[str, Any]) -> dict[str, Any]:
        """The local XCom (training_summary.json), with model_dir the S3 model.tar.gz."""
        described = result["Training"]
        model_data_url = described["ModelArtifacts"]["S3ModelArtifacts"]
        summary = read_training_summary(model_data_url, self.aws_conn_id)
        return {
            **summary,
            "model_dir": model_data_url,
            "model_data_url": model_data_url,
            "training_job_name": described["TrainingJobName"],
        }


class RetrainProcessingOperator(_RetrainJob, SageMakerProcessingOperator):
    """validate_raw and evaluate_model: SageMaker processing jobs whose request is built at run time."""

    template_fields = aws_template_fields()

    def __init__(self, *, model_name: str, job: str, upstream_results: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(config={}, action_if_job_exists="fail", **kwargs)
        self._setup(model_name, job, upstream_results)

    def build_config(self, context: Any) -> dict[str, Any]:
        """The validated CreateProcessingJob request for this run and try."""
        from retrain.aws.requests import processing_config
        from retrain.store import get_store

        config, ctx, code = self.run_inputs(context)
        champion_store = get_store() if self.job == "evaluate_model" else None
        return processing_config(self.job, config, ctx, code, champion_store)

    def execute(self, context: Any) -> dict[str, Any]:
        self.config = self.build_config(context)
        describe = self.hook.describe_processing_job
        running = self.running_earlier_try(context, describe, "ProcessingJobStatus")
        if running:
            described = self.attach(running, "Processing", describe, "ProcessingJobStatus")
            return self.summarize({"Processing": described})
        return self.summarize(super().execute(context))

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        self.config = self.build_config(context)
        return self.summarize(super().execute_complete(context, event))

    def summarize(self, result: dict[str, Any]) -> dict[str, Any]:
        """The job's result JSON from S3 (where the job that ran wrote it: an attached earlier try's job wrote under its
        own try), in the local backend's XCom shape."""
        from retrain.aws.requests import evaluation_summary, result_uri

        uri = result_uri(self.job, result["Processing"])
        document = read_s3_json(uri, self.aws_conn_id)
        if self.job == "evaluate_model":
            return evaluation_summary(document, uri)
        return {**document, "processing_job_name": result["Processing"]["ProcessingJobName"]}


class RetrainGlueJobOperator(_RetrainJob, GlueJobOperator):
    """build_dataset: the Glue Spark job whose arguments are built at run time."""

    template_fields = aws_template_fields()

    def __init__(
        self, *, model_name: str, job: str, upstream_results: tuple[str, ...], timeout_seconds: int, **kwargs: Any
    ) -> None:
        from retrain.aws.requests import max_attempts

        interval = check_interval()
        super().__init__(
            aws_conn_id=AWS_CONN_ID,
            deferrable=deferrable(),
            waiter_delay=interval,
            job_poll_interval=interval,
            waiter_max_attempts=max_attempts(timeout_seconds, interval),
            # A retry waits for the earlier try's run while Glue still runs it, instead of starting a second one.
            resume_glue_job_on_retry=True,
            **kwargs,
        )
        self._setup(model_name, job, upstream_results)

    def build_kwargs(self, context: Any) -> dict[str, Any]:
        """Validated GlueJobOperator keyword arguments for this run."""
        from retrain.aws.requests import glue_kwargs

        return glue_kwargs(*self.run_inputs(context))

    def _apply(self, context: Any) -> None:
        # Set before self.hook is first read: the hook is built once from these attributes.
        for key, value in self.build_kwargs(context).items():
            setattr(self, key, value)

    def execute(self, context: Any) -> dict[str, Any]:
        self._apply(context)
        with self._failure_reason(lambda: self._job_run_id):
            return self.summarize(super().execute(context))

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        self._apply(context)
        with self._failure_reason(lambda: (event or {}).get("run_id")):
            return self.summarize(super().execute_complete(context, event))

    @contextlib.contextmanager
    def _failure_reason(self, run_id: Callable[[], str | None]) -> Iterator[None]:
        """A failed run fails the task with Glue's ErrorMessage; without retries when the script rejected its input
        (``retrain.aws.names.BAD_INPUT_MARKER``), as the local runner does for exit status 65."""
        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        from retrain.aws.names import BAD_INPUT_MARKER

        try:
            yield
        except AirflowException as exc:
            message = self._error_message(run_id())
            if BAD_INPUT_MARKER in message:
                raise AirflowFailException(f"Glue run {run_id()}: {message}") from None
            if message:
                raise AirflowException(f"{exc}; Glue's ErrorMessage: {message}") from exc
            raise

    def _error_message(self, run_id: str | None) -> str:
        """The run's ErrorMessage (GetJobRun), or "" when there is no run to ask about."""
        if not run_id:
            return ""
        return self.hook.conn.get_job_run(JobName=self.job_name, RunId=run_id)["JobRun"].get("ErrorMessage", "")

    def summarize(self, job_run_id: str) -> dict[str, Any]:
        """The ETL's result.json from S3 (the local XCom), with the Glue run id."""
        from retrain.aws.requests import result_uri

        return {
            **read_s3_json(result_uri(self.job, {"script_args": self.script_args}), self.aws_conn_id),
            "glue_job_run_id": job_run_id,
        }


def _sagemaker_client():
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    return SageMakerHook(aws_conn_id=AWS_CONN_ID).conn


class RegisterModelPackageOperator(ModelOperator):
    """register_model: a SageMaker model package, PendingManualApproval, with the run's lineage and metrics.

    The ClientToken is derived from the run, so a retried task gets its first package back
    rather than a second one.
    """

    ui_color = "#f3e8fd"

    def __init__(self, *, job: str, upstream_results: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job, self.upstream_results = job, upstream_results

    def execute(self, context: Any) -> dict[str, Any]:
        from retrain.aws.requests import code_bundle, model_package_request, require_aws
        from retrain.config import load_model

        config = load_model(self.model_name)
        ctx = run_context(context, self.upstream_results)
        request = model_package_request(config, ctx, code_bundle(require_aws(config)))
        arn = _sagemaker_client().create_model_package(**request)["ModelPackageArn"]
        version = int(arn.rsplit("/", 1)[1])
        self.log.info("registered %s v%d as %s (PendingManualApproval)", config.name, version, arn)
        trained = ctx.upstream["train_model"]
        return {
            "name": config.name,
            "version": version,
            "model_package_arn": arn,
            "model_data_url": trained["model_data_url"],
            "weights_digest": trained["weights_digest"],
            "status": "PendingManualApproval",
        }


class PromoteModelPackageOperator(ModelOperator):
    """promote_model: approve the model package, then append the ledger (the source of truth).

    Refuses, changing nothing, unless the champion its gate compared against still serves,
    exactly as the local registry does.
    """

    ui_color = "#e8fde8"

    def __init__(self, *, job: str, upstream_results: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job, self.upstream_results = job, upstream_results

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from retrain import ledger
        from retrain.aws.requests import require_aws, update_package_request
        from retrain.config import load_model
        from retrain.store import get_store

        config = load_model(self.model_name)
        aws = require_aws(config)
        ctx = run_context(context, self.upstream_results)
        registered, approval, gated = (ctx.upstream[k] for k in ("register_model", "await_approval", "gate_on_metrics"))
        actor = (approval.get("responded_by_user") or {}).get("name") or (approval.get("responded_by_user") or {}).get(
            "id"
        )
        if not actor:
            raise AirflowFailException(
                "promote_model needs the approver's identity from await_approval; none was recorded"
            )
        reason = (approval.get("params_input") or {}).get("reason") or f"approved in {ctx.dag_id} run {ctx.run_id}"
        store = get_store()
        entries = ledger.verify(store, config.name)
        serving = ledger.serving_champion(entries)
        from retrain_airflow.deployment import require_gated_champion

        require_gated_champion(config.name, int(registered["version"]), gated, serving, "nothing was changed")
        version = int(registered["version"])
        # The archive's hash, taken before approval: a rollback to this version refuses an archive that changed since.
        archive_sha256 = store.sha256_of(store.key_of(registered["model_data_url"]))
        _sagemaker_client().update_model_package(
            **update_package_request(aws, version, True, f"approved by {actor}: {reason}")
        )
        entry = ledger.append(
            store,
            config.name,
            action="promote",
            to_version=version,
            actor=actor,
            reason=reason,
            model_dir=registered["model_data_url"],
            gate_digest=gated["digest"],
            run_id=ctx.run_id,
            weights_digest=registered["weights_digest"],
            archive_sha256=archive_sha256,
        )
        self.log.info("%s v%d approved in the model registry; ledger entry #%d", config.name, version, entry["seq"])
        from retrain_airflow.aws_deployment import serve_champion

        serving = serve_champion(
            config, version, registered["model_data_url"], registered["weights_digest"], ctx.run_id, self.log
        )
        return {
            "name": config.name,
            "champion": version,
            "model_package_arn": registered["model_package_arn"],
            "ledger_entry": entry,
            "serving": serving,
        }


class AwsApproveModelOperator(ApproveModelOperator):
    """await_approval on aws: a rejection or timeout marks the model package Rejected."""

    def reject(self, config: Any, ctx: Any, version: int, actor: str | None, reason: str) -> None:
        from retrain.aws.requests import require_aws, update_package_request

        request = update_package_request(
            require_aws(config), version, False, f"rejected by {actor or 'timeout'}: {reason}"
        )
        _sagemaker_client().update_model_package(**request)


class AwsRollbackModelOperator(RollbackModelOperator):
    """rollback_model on aws: the current package Rejected, the target Approved, then the ledger entry."""

    def roll_back(self, config: Any, ctx: Any, target: int | None, actor: str, reason: str) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from retrain import ledger
        from retrain.aws.requests import require_aws, update_package_request
        from retrain.store import get_store

        aws, store = require_aws(config), get_store()
        entries = ledger.verify(store, config.name)
        current = ledger.serving_champion(entries)
        try:
            target, entry = ledger.rollback_target(config.name, entries, target)
        except ledger.NoRollbackTarget as exc:
            raise AirflowFailException(str(exc)) from None
        served = {target: entry}
        recorded = served[target].get("archive_sha256")
        if not recorded:
            raise AirflowFailException(
                f"{config.name} v{target} has no recorded archive hash; refusing to serve weights nobody can verify"
            )
        actual = store.sha256_of(store.key_of(served[target]["model_dir"]))
        if actual != recorded:
            raise AirflowFailException(
                f"{config.name} v{target}: {served[target]['model_dir']} has sha256 {actual}, but {recorded} "
                "was approved; nothing was changed"
            )
        client = _sagemaker_client()
        client.update_model_package(**update_package_request(aws, current, False, f"rolled back by {actor}: {reason}"))
        client.update_model_package(**update_package_request(aws, target, True, f"restored by {actor}: {reason}"))
        entry = ledger.append(
            store,
            config.name,
            action="rollback",
            to_version=target,
            actor=actor,
            reason=reason,
            model_dir=served[target]["model_dir"],
            gate_digest=served[target].get("gate_digest"),
            weights_digest=served[target].get("weights_digest"),
            archive_sha256=recorded,
        )
        from retrain_airflow.aws_deployment import serve_champion

        serving = serve_champion(
            config, target, served[target]["model_dir"], served[target].get("weights_digest"), ctx.run_id, self.log
        )
        return {"name": config.name, "champion": target, "previous": current, "ledger_entry": entry, "serving": serving}


JOB_OPERATORS = {
    "validate_raw": RetrainProcessingOperator,
    "build_dataset": RetrainGlueJobOperator,
    "train_model": RetrainTrainingOperator,
    "evaluate_model": RetrainProcessingOperator,
    "register_model": RegisterModelPackageOperator,
    "promote_model": PromoteModelPackageOperator,
}


def aws_job_operator(config: Any, task_id: str, upstream_results: tuple[str, ...], task_args: dict[str, Any]):
    """The aws operator of one job task. A task that waits for a Glue or SageMaker job polls it as long as AWS may run
    it (``job_timeout_seconds``), and its execution_timeout is that long too: ``dag.job_timeout_minutes`` bounds the
    local jobs, while on AWS the job's own limits do."""
    from datetime import timedelta

    from retrain.aws.requests import job_timeout_seconds, require_aws

    aws = require_aws(config)
    operator = JOB_OPERATORS[task_id]
    common = {
        "task_id": task_id,
        "model_name": config.name,
        "job": task_id,
        "upstream_results": upstream_results,
        **task_args,
    }
    if operator not in (RetrainGlueJobOperator, RetrainTrainingOperator, RetrainProcessingOperator):
        return operator(**common)
    timeout = job_timeout_seconds(aws, task_id)
    common["execution_timeout"] = timedelta(seconds=timeout + 300)  # the last poll and reading the result
    if operator is RetrainGlueJobOperator:
        return operator(timeout_seconds=timeout, **common)
    return operator(**_job_kwargs(config.name, task_id, timeout), **common)
