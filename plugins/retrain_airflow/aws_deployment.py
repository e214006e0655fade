"""The deployment stage of the aws backend: the same tasks as the local one, on the model's SageMaker endpoint.

    deploy_shadow -> observe_shadow -> start_canary -> observe_canary -> promote_model

- ``deploy_shadow`` (the provider's ``SageMakerEndpointOperator``): the challenger's Model, then an endpoint config with
  the champion at weight 1, the challenger at weight 0 and the challenger's shadow variant, then the endpoint is
  updated to it (created, when the model has none yet). Alarms go on the challenger's variants (ledger: ``shadow``).
- ``observe_shadow`` / ``observe_canary`` defer to ``CloudWatchWindowTrigger``, which reads the variant's invocation
  counts and its alarms from CloudWatch in the triggerer.
- ``start_canary`` moves the weights: the challenger answers ``deployment.canary.percent`` (ledger: ``canary``).
- ``promote_model`` (``retrain_airflow.aws_operators.PromoteModelPackageOperator``) approves the package, appends the
  ledger and sends 100% of the traffic to the new champion (``Endpoint.route_all``).

A breach or an inconclusive window sets the weights back (the champion at 1, the challenger at 0) and never deletes the
endpoint config that serves; the alias and the package stay; the ledger records ``auto_rollback`` or
``inconclusive`` with the figures, and the run fails with the reason, which alerts. The requests are built and
checked against botocore's service models in ``retrain.aws.endpoints``.

What SageMaker cannot tell this stage: whether the shadow **agrees** with the champion (shadow variants publish
errors and latency, not a comparison of answers), so on AWS the shadow window judges errors, latency and volume only;
and a **p99 figure** (the alarm on ``ModelLatency`` p99 judges it, and its state is what the window reads).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.amazon.aws.operators.sagemaker import SageMakerEndpointOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.triggers.base import BaseTrigger, TriggerEvent

from retrain_airflow.aws_operators import AWS_CONN_ID, check_interval, deferrable
from retrain_airflow.deployment import (
    AUTOMATIC,
    ObserveOperator,
    StartCanaryOperator,
    _record,
    policy_of,
    stage_inputs,
)


def _clients(aws_conn_id: str | None = AWS_CONN_ID):
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    return SageMakerHook(aws_conn_id=aws_conn_id).conn, AwsBaseHook(aws_conn_id, client_type="cloudwatch").conn


def _not_found(exc: Exception) -> bool:
    """A botocore ClientError saying the resource does not exist (SageMaker answers ValidationException "Could not
    find ..."); read off the error's ``response``, since only the store and the schema import botocore."""
    error = (getattr(exc, "response", None) or {}).get("Error", {})
    return error.get("Code") == "ValidationException" and "Could not find" in error.get("Message", "")


class Endpoint:
    """One model's SageMaker endpoint, through boto3 clients (the provider's hooks make them): every request is built
    and schema-checked by ``retrain.aws.endpoints``."""

    def __init__(
        self, sagemaker: Any, cloudwatch: Any, config: Any, code: Any, log: Any, poll_seconds: int = 30
    ) -> None:
        self.sagemaker, self.cloudwatch, self.log, self.poll_seconds = sagemaker, cloudwatch, log, poll_seconds
        self.aws, self.model, self.task, self.code = config.aws, config.name, config.task, code

    @property
    def name(self) -> str:
        from retrain.aws.endpoints import endpoint_name

        return endpoint_name(self.model)

    def describe(self) -> dict[str, Any] | None:
        try:
            return self.sagemaker.describe_endpoint(EndpointName=self.name)
        except Exception as exc:
            if _not_found(exc):
                return None
            raise

    def weights(self, described: dict[str, Any] | None = None) -> dict[int, float]:
        """version -> current weight of the production variants this module named."""
        from retrain.aws.endpoints import version_of_variant

        described = self.describe() if described is None else described
        out = {}
        for variant in (described or {}).get("ProductionVariants", []):
            version = version_of_variant(variant["VariantName"])
            if version is not None:
                out[version] = float(variant.get("CurrentWeight", 0.0))
        return out

    def model_request(self, version: int, model_data_url: str, weights_digest: str) -> dict[str, Any] | None:
        """The CreateModel request of ``version``, or None when its Model exists already with the same archive. A Model
        of that name with another archive is refused: a name never serves two sets of weights."""
        from retrain.aws.endpoints import model_name, model_request

        try:
            existing = self.sagemaker.describe_model(ModelName=model_name(self.model, version))
        except Exception as exc:
            if _not_found(exc):
                return model_request(
                    self.aws, self.model, self.task, version, model_data_url, weights_digest, self.code
                )
            raise
        found = (existing.get("PrimaryContainer") or {}).get("ModelDataUrl")
        if found != model_data_url:
            raise ValueError(
                f"{self.model} v{version}: SageMaker Model {model_name(self.model, version)} serves {found}, not "
                f"{model_data_url}; refusing to serve other weights under its name"
            )
        return None

    def ensure_model(self, version: int, model_data_url: str, weights_digest: str) -> None:
        request = self.model_request(version, model_data_url, weights_digest)
        if request is not None:
            self.sagemaker.create_model(**request)
            self.log.info("%s: SageMaker Model %s created", self.model, request["ModelName"])

    def put_alarms(self, variant: str, max_error_rate: float, p99_ms_max: float | None) -> list[str]:
        from retrain.aws.endpoints import alarm_requests

        requests = alarm_requests(self.aws, self.model, variant, max_error_rate, p99_ms_max)
        for request in requests:
            self.cloudwatch.put_metric_alarm(**request)
        return [r["AlarmName"] for r in requests]

    def config_exists(self, name: str) -> bool:
        try:
            self.sagemaker.describe_endpoint_config(EndpointConfigName=name)
        except Exception as exc:
            if _not_found(exc):
                return False
            raise
        return True

    def wait_in_service(self, timeout_s: int = 3600) -> None:
        self.sagemaker.get_waiter("endpoint_in_service").wait(
            EndpointName=self.name,
            WaiterConfig={"Delay": self.poll_seconds, "MaxAttempts": max(1, timeout_s // self.poll_seconds)},
        )

    def set_weights(self, weights: dict[int, float]) -> None:
        """Move traffic between production variants that serve already: no instance changes, seconds on AWS."""
        from retrain.aws.endpoints import weights_request

        self.sagemaker.update_endpoint_weights_and_capacities(**weights_request(self.model, weights))
        self.wait_in_service()
        self.log.info("%s: weights %s", self.name, {f"v{v}": w for v, w in sorted(weights.items())})

    def switch(self, weights: dict[int, float], identity: str, shadow: int | None = None) -> str:
        """Point the endpoint at a new config with ``weights`` (and ``shadow``): create the endpoint when there is
        none, else update it (blue/green on AWS). Every version's Model must exist. Returns the config's name."""
        from retrain.aws.endpoints import endpoint_config_name, endpoint_config_request, endpoint_request

        tag = "-".join(f"v{v}" for v in sorted(weights)) + (f"-s{shadow}" if shadow is not None else "")
        name = endpoint_config_name(self.model, tag, identity)
        request = endpoint_config_request(self.aws, self.model, name, weights, shadow)
        if not self.config_exists(name):  # a retried task made it already: a name is never reused for another
            self.sagemaker.create_endpoint_config(**request)
        create = self.describe() is None
        call = self.sagemaker.create_endpoint if create else self.sagemaker.update_endpoint
        call(**endpoint_request(self.model, name, create))
        self.wait_in_service()
        self.log.info("%s %s on config %s", "created" if create else "updated", self.name, name)
        return name

    def route_all(self, target: int, model_data_url: str, weights_digest: str, identity: str, policy: dict) -> dict:
        """100% of the endpoint's traffic to ``target``: a weight move when it serves as a variant already and no
        shadow runs; else a new config with ``target`` at 1 and the version serving now kept at 0 (so that a rollback
        to it stays a weight move). ``policy`` (``aws_policy(config, "canary")``) sets the ceilings of the alarms that
        keep watching the serving variant. Returns the endpoint's description."""
        described = self.describe()
        current = self.weights(described)
        self.ensure_model(target, model_data_url, weights_digest)
        self.put_alarms(_variant(target), policy["max_error_rate"], policy.get("p99_alarm_ms"))
        if described is not None and target in current:
            self.set_weights({v: 1.0 if v == target else 0.0 for v in current})  # traffic moves first, in seconds
            if not described.get("ShadowProductionVariants"):
                return self.describe()
        serving = max(current, key=current.get) if current else None
        keep = {serving: 0.0} if serving not in (None, target) else {}
        self.switch({target: 1.0, **keep}, identity)
        return self.describe()


def _variant(version: int) -> str:
    from retrain.aws.endpoints import variant_name

    return variant_name(version)


def endpoint_for(config: Any, log: Any, aws_conn_id: str | None = AWS_CONN_ID) -> Endpoint:
    """The model's endpoint, with the deployed code its Models mount (``code_bundle``: startup.sh exports it)."""
    from retrain.aws.requests import code_bundle, require_aws

    sagemaker, cloudwatch = _clients(aws_conn_id)
    code = code_bundle(require_aws(config))
    return Endpoint(sagemaker, cloudwatch, config, code, log, poll_seconds=check_interval())


def aws_policy(config: Any, variant: str) -> dict[str, Any]:
    """The window's criteria on AWS: the config's, less what SageMaker cannot measure (agreement; a p99 figure, which
    the alarm judges instead)."""
    policy = policy_of(config, variant)
    return {**policy, "min_agreement": None, "p99_alarm_ms": policy.get("p99_ms_max"), "p99_ms_max": None}


def _aws_stage(context: Any, model: str) -> dict[str, Any]:
    """What the deployment knows at run time: the challenger (registered, its archive and digest), the approver, the
    champion that serves by the S3 ledger (its archive and digest)."""
    from retrain import ledger

    registered, approval, entries, champion = stage_inputs(context, model)
    version = int(registered["version"])
    served = {e["to_version"]: e for e in ledger.champion_entries(entries)}.get(champion, {})
    user = approval.get("responded_by_user") or {}
    return {
        "challenger": version,
        "model_dir": registered["model_data_url"],
        "weights_digest": registered["weights_digest"],
        "approver": user.get("name") or user.get("id") or AUTOMATIC,
        "champion": champion,
        "champion_model_dir": served.get("model_dir"),
        "champion_weights_digest": served.get("weights_digest"),
        "run_id": context["dag_run"].run_id,
    }


class AwsDeployShadowOperator(SageMakerEndpointOperator):
    """deploy_shadow on aws: the provider's endpoint operator, fed at run time (Model, EndpointConfig, Endpoint)."""

    ui_color = "#e6f0e0"
    template_fields = aws_template_fields()  # the config is built in execute, never rendered

    def __init__(self, *, model_name: str, **kwargs: Any) -> None:
        kwargs.setdefault("deferrable", deferrable())
        kwargs.setdefault("check_interval", check_interval())
        super().__init__(config={}, aws_conn_id=AWS_CONN_ID, **kwargs)
        self.model_name = model_name

    def build_config(self, context: Any, stage: dict[str, Any]) -> dict[str, Any]:
        """The provider's config: the challenger's Model (when new), the endpoint config (champion 1, challenger 0,
        challenger's shadow) and the endpoint (created when the model has none)."""
        from retrain.aws.endpoints import endpoint_config_name, endpoint_config_request, endpoint_request
        from retrain.config import load_model

        config = load_model(self.model_name)
        endpoint = endpoint_for(config, self.log)
        champion, challenger = stage["champion"], stage["challenger"]
        endpoint.ensure_model(champion, stage["champion_model_dir"], stage["champion_weights_digest"])
        for variant, window in ((f"shadow-v{challenger}", "shadow"), (_variant(challenger), "canary")):
            policy = aws_policy(config, window)
            endpoint.put_alarms(variant, policy["max_error_rate"], policy["p99_alarm_ms"])
        weights = {champion: 1.0, challenger: 0.0}
        name = endpoint_config_name(self.model_name, f"v{champion}-v{challenger}-s{challenger}", stage["run_id"])
        self.operation = "create" if endpoint.describe() is None else "update"
        out: dict[str, Any] = {"Endpoint": endpoint_request(self.model_name, name, create=self.operation == "create")}
        if not endpoint.config_exists(name):  # else a retried try made it: the provider would fail creating it again
            out["EndpointConfig"] = endpoint_config_request(endpoint.aws, self.model_name, name, weights, challenger)
        model = endpoint.model_request(challenger, stage["model_dir"], stage["weights_digest"])
        if model is not None:
            out["Model"] = model
        return out

    def execute(self, context: Any) -> dict[str, Any]:
        stage = _aws_stage(context, self.model_name)
        if stage["champion"] is None:
            self.log.info(
                "no champion serves %s yet: v%s goes to 100%% at promotion", self.model_name, stage["challenger"]
            )
            return {**stage, "skipped": True}
        self.config = self.build_config(context, stage)
        context["ti"].xcom_push(key="stage", value=stage)
        super().execute(context)  # defers while the endpoint updates, when deferrable
        return self._deployed(context)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        super().execute_complete(context, event)
        return self._deployed(context)

    def _deployed(self, context: Any) -> dict[str, Any]:
        from retrain import ledger
        from retrain.store import get_store

        stage = context["ti"].xcom_pull(task_ids=self.task_id, key="stage")
        recorded = any(  # by an earlier try of this task
            (e["action"], e["to_version"], e.get("run_id")) == ("shadow", stage["challenger"], stage["run_id"])
            for e in ledger.verify(get_store(), self.model_name)
        )
        if not recorded:
            reason = f"approved; shadow beside v{stage['champion']}"
            _record(self.model_name, stage, "shadow", stage["approver"], reason, None)
        self.log.info("%s: v%s answers, v%s shadows it", self.model_name, stage["champion"], stage["challenger"])
        return {**stage, "skipped": False, "started_at": time.time()}


class AwsStartCanaryOperator(StartCanaryOperator):
    """start_canary on aws: the challenger's variant gets ``deployment.canary.percent`` of the weight."""

    def route_canary(self, config: Any, stage: dict[str, Any], share: float) -> dict[str, Any]:
        endpoint_for(config, self.log).set_weights({stage["champion"]: 1.0 - share, stage["challenger"]: share})
        return {}


class CloudWatchWindowTrigger(BaseTrigger):
    """Reads a variant's invocation counts and alarms from CloudWatch until ``retrain.serving.judge`` ends the window
    (or an alarm fires); runs in the triggerer, so an hour-long canary holds no worker slot."""

    def __init__(
        self,
        model: str,
        window: str,
        variant: str,
        version: int,
        started_at: float,
        policy: dict[str, Any],
        alarms: list[str],
        poll_seconds: float,
        aws_conn_id: str | None = AWS_CONN_ID,
    ) -> None:
        super().__init__()
        self.model, self.window, self.variant, self.version = model, window, variant, version
        self.started_at, self.policy, self.alarms = started_at, policy, alarms
        self.poll_seconds, self.aws_conn_id = poll_seconds, aws_conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "model": self.model,
                "window": self.window,
                "variant": self.variant,
                "version": self.version,
                "started_at": self.started_at,
                "policy": self.policy,
                "alarms": self.alarms,
                "poll_seconds": self.poll_seconds,
                "aws_conn_id": self.aws_conn_id,
            },
        )

    def read(self, cloudwatch: Any) -> tuple[Any, list[str]]:
        """The window's figures so far, and the reasons of the variant's alarms that are in ALARM."""
        from retrain.aws.endpoints import metric_data_request
        from retrain.serving import WindowFigures

        start = datetime.fromtimestamp(self.started_at, UTC).replace(second=0, microsecond=0)
        end = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
        answer = cloudwatch.get_metric_data(**metric_data_request(self.model, self.variant, start, end))
        sums = {r["Id"]: int(sum(r.get("Values", []))) for r in answer["MetricDataResults"]}
        alarms = cloudwatch.describe_alarms(AlarmNames=self.alarms)["MetricAlarms"]
        firing = [
            f"alarm {a['AlarmName']} is ALARM ({a.get('StateReason', '')})"
            for a in alarms
            if a["StateValue"] == "ALARM"
        ]
        figures = WindowFigures(self.version, sums.get("invocations", 0), sums.get("errors", 0), None, None)
        return figures, firing

    async def run(self):
        from retrain.serving import judge

        _sagemaker, cloudwatch = await asyncio.to_thread(_clients, self.aws_conn_id)
        failures = 0
        while True:
            try:
                figures, firing = await asyncio.to_thread(self.read, cloudwatch)
                failures = 0
            except Exception as exc:  # CloudWatch throttles; a window survives a few failed reads
                failures += 1
                if failures * self.poll_seconds > 300:
                    yield TriggerEvent({"state": "error", "reasons": [f"CloudWatch unreadable: {exc}"]})
                    return
                await asyncio.sleep(self.poll_seconds)
                continue
            elapsed = time.time() - self.started_at
            state, reasons = ("rollback", firing) if firing else judge(self.window, figures, self.policy, elapsed)
            self.log.info("%s %s after %.0f s: %s %s", self.model, self.variant, elapsed, state, figures)
            if state != "continue":
                yield TriggerEvent(
                    {"state": state, "reasons": reasons, "figures": figures.as_dict(), "elapsed_s": elapsed}
                )
                return
            await asyncio.sleep(self.poll_seconds)


class AwsObserveOperator(ObserveOperator):
    """observe_shadow / observe_canary on aws: CloudWatchWindowTrigger watches the window; a breach or an inconclusive
    end sets the weights back (the champion at 1), keeping the endpoint config that serves."""

    def trigger(self, config: Any, stage: dict[str, Any]) -> CloudWatchWindowTrigger:
        from retrain.aws.endpoints import alarm_names, shadow_variant_name

        challenger = stage["challenger"]
        variant = shadow_variant_name(challenger) if self.variant == "shadow" else _variant(challenger)
        return CloudWatchWindowTrigger(
            model=config.name,
            window=self.variant,
            variant=variant,
            version=challenger,
            started_at=stage["started_at"],
            policy=aws_policy(config, self.variant),
            alarms=sorted(alarm_names(config.name, variant).values()),
            poll_seconds=config.deployment.poll_seconds,
        )

    def restore(self, config: Any, stage: dict[str, Any]) -> None:
        endpoint_for(config, self.log).set_weights({stage["champion"]: 1.0, stage["challenger"]: 0.0})


def serve_champion(config: Any, version: int, model_data_url: str, weights_digest: str, run_id: str, log: Any) -> dict:
    """100% of the model's SageMaker endpoint to ``version`` (promotion and rollback): the endpoint's variants and
    weights after the move, for the task's XCom."""
    endpoint = endpoint_for(config, log)
    described = endpoint.route_all(version, model_data_url, weights_digest, run_id, aws_policy(config, "canary"))
    return {
        "endpoint": endpoint.name,
        "config": described["EndpointConfigName"],
        "weights": {f"v{v}": w for v, w in sorted(endpoint.weights(described).items())},
    }
