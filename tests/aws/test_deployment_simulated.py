"""The aws backend's deployment stage against moto (an AWS simulator), never AWS: a SageMaker endpoint per model, the
challenger as a weight-0 production variant and a shadow variant, the canary by weight, CloudWatch alarms and windows.

Real here: the stage's operators (the provider's ``SageMakerEndpointOperator`` for ``deploy_shadow``), the trigger's
``run`` loop reading CloudWatch, every request built and checked against botocore's service models by
``retrain.aws.endpoints``, the S3 ledger, the model registry's packages.

Simulated: AWS. moto keeps endpoints, configs, weights and alarms, with what it lacks added by
``tests/moto_endpoints.py`` (UpdateEndpoint, shadow variants, name reuse refused). moto serves no model, publishes no
metric and evaluates no alarm: these tests put the ``Invocations`` and ``Invocation5XXErrors`` data SageMaker would
publish, and set an alarm's state as CloudWatch would, and say so where they do. Airflow's task context is a small
stand-in (``TaskContext``): the scheduler's run of this stage is ``test_pipeline_simulated.py`` (a first model, so the
stage passes through and promotion creates the endpoint) and, locally, ``tests/integration``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from retrain import ledger
from retrain.aws import endpoints
from retrain.config import load_model
from retrain.store import S3Store
from simulated_account import SimulatedAccount, register_package, shipped_config

pytestmark = pytest.mark.aws
LOG = logging.getLogger("test_deployment_simulated")


class TaskContext(dict):
    """A stand-in for the Airflow context a task gets: the run's XComs by (task id, key), the run id."""

    def __init__(self, run_id: str, xcoms: dict[str, Any]) -> None:
        ti = SimpleNamespace(try_number=1, current=None, xcoms={(k, "return_value"): v for k, v in xcoms.items()})
        ti.xcom_pull = lambda task_ids, key="return_value": ti.xcoms.get((task_ids, key))
        ti.xcom_push = lambda key, value: ti.xcoms.__setitem__((ti.current, key), value)
        super().__init__(
            ti=ti,
            dag_run=SimpleNamespace(run_id=run_id, dag_id="retrain_intent"),
            params={},
            data_interval_start=None,
            data_interval_end=None,
        )

    def run(self, operator) -> Any:
        self["ti"].current = operator.task_id
        result = operator.execute(self)
        self["ti"].xcoms[(operator.task_id, "return_value")] = result
        return result


@pytest.fixture
def world(moto_simulator_endpoint, tmp_path, monkeypatch):
    """v1 promoted and serving 100% of ``retrain-intent``; v2 trained, registered and approved. The shipped intent
    config in its own simulated account (tests/simulated_account.py lists the one edit)."""
    account = SimulatedAccount.create(moto_simulator_endpoint)
    (tmp_path / "config").mkdir()
    shipped_config(tmp_path / "config", "intent", account.account_id)
    env = {
        "RETRAIN_CONFIG_DIR": str(tmp_path / "config"),
        "RETRAIN_BACKEND": "aws",
        "RETRAIN_AWS_DEFERRABLE": "false",  # the provider's waiter polls in the task; the scheduler tier defers
        "RETRAIN_AWS_CHECK_INTERVAL": "1",
        "RETRAIN_GIT_SHA": "d3b10" * 8,  # the deployed code, as startup.sh exports it: the Models mount its tree
        "RETRAIN_CODE_DIGEST": "c0de" * 16,
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(account.airflow_connection()),
        **account.env(),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = load_model("intent")
    aws = config.aws
    for kind in ("dataset", "artifact", "golden"):
        monkeypatch.setenv(f"RETRAIN_{kind.upper()}_BUCKET", getattr(aws, f"{kind}_bucket"))
    account.provision([config])
    sagemaker, cloudwatch = account.client("sagemaker"), account.client("cloudwatch")
    store = S3Store(aws.dataset_bucket, aws.artifact_bucket, aws.golden_bucket, client=account.client("s3"))
    urls = {}
    for version in (1, 2):
        key = f"runs/intent/run-{version}/train_model/try-1/model/job-{version}/output/model.tar.gz"
        archive = f"model archive v{version}".encode()
        store.write_once_bytes(key, archive)
        urls[version] = store.uri(key)
        register_package(sagemaker, aws, urls[version], "Approved" if version == 1 else "PendingManualApproval")
    ledger.append(
        store,
        "intent",
        action="promote",
        to_version=1,
        actor="alice",
        reason="v1 approved",
        model_dir=urls[1],
        weights_digest="1" * 64,
        archive_sha256=hashlib.sha256(b"model archive v1").hexdigest(),
    )
    from retrain_airflow.aws_deployment import serve_champion

    serve_champion(config, 1, urls[1], "1" * 64, "run-1", LOG)  # what v1's promote_model did
    context = TaskContext(
        "scheduled__2026-09-21T00:00:00+00:00",
        {
            "register_model": {
                "version": 2,
                "model_data_url": urls[2],
                "weights_digest": "2" * 64,
                "model_package_arn": endpoints_arn(account, aws, 2),
            },
            "train_model": {"model_data_url": urls[2], "weights_digest": "2" * 64},
            "gate_on_metrics": {"champion_version": "1", "digest": "9" * 64},
            "await_approval": {"responded_by_user": {"id": "2", "name": "alice"}, "params_input": {"reason": "ok"}},
        },
    )
    return SimpleNamespace(
        config=config, store=store, sagemaker=sagemaker, cloudwatch=cloudwatch, account=account, context=context
    )


def endpoints_arn(account, aws, version: int) -> str:
    return f"arn:aws:sagemaker:us-east-1:{account.account_id}:model-package/{aws.model_package_group}/{version}"


def weights(world) -> dict[str, float]:
    described = world.sagemaker.describe_endpoint(EndpointName="retrain-intent")
    return {v["VariantName"]: v["CurrentWeight"] for v in described["ProductionVariants"]}


def publish(world, variant: str, invocations: int, errors: int = 0) -> None:
    """What SageMaker publishes for a variant and moto cannot: its invocation counts, put by the test."""
    dimensions = [{"Name": "EndpointName", "Value": "retrain-intent"}, {"Name": "VariantName", "Value": variant}]
    now = datetime.now(UTC)
    world.cloudwatch.put_metric_data(
        Namespace="AWS/SageMaker",
        MetricData=[
            {"MetricName": "Invocations", "Dimensions": dimensions, "Value": invocations, "Timestamp": now},
            {"MetricName": "Invocation5XXErrors", "Dimensions": dimensions, "Value": errors, "Timestamp": now},
        ],
    )


def window(world, operator, stage: dict, elapsed_s: float = 0.0) -> dict:
    """The observation task's deferral, run to its event: the trigger's own ``run`` loop against the simulator. A
    window that has lasted ``elapsed_s`` already is one whose start is that far back."""
    trigger = operator.trigger(world.config, {**stage, "started_at": time.time() - elapsed_s})
    trigger.poll_seconds = 0.2

    async def first():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(asyncio.wait_for(first(), 60))


def deploy_shadow_and_pass_it(world) -> dict:
    from retrain_airflow.aws_deployment import AwsDeployShadowOperator, AwsObserveOperator, AwsStartCanaryOperator

    ctx = world.context
    stage = ctx.run(AwsDeployShadowOperator(task_id="deploy_shadow", model_name="intent"))
    observe = AwsObserveOperator(
        task_id="observe_shadow", model_name="intent", variant="shadow", upstream="deploy_shadow"
    )
    publish(world, "shadow-v2", world.config.deployment.shadow.min_requests)
    event = window(world, observe, stage)
    assert event["state"] == "pass", event
    ctx["ti"].xcoms[("observe_shadow", "return_value")] = observe.execute_complete(ctx, event, stage)
    return ctx.run(AwsStartCanaryOperator(task_id="start_canary", model_name="intent"))


def test_first_version_gets_an_endpoint_with_one_variant_and_its_alarms(world):
    described = world.sagemaker.describe_endpoint(EndpointName="retrain-intent")
    assert described["EndpointStatus"] == "InService"
    assert weights(world) == {"v1": 1.0}
    container = world.sagemaker.describe_model(ModelName="retrain-intent-v1")["PrimaryContainer"]
    assert container["Environment"]["RETRAIN_WEIGHTS_DIGEST"] == "1" * 64
    assert container["Environment"]["RETRAIN_TASK"] == "text_classification"
    assert container["Image"] == world.config.aws.training.image_uri  # the job image, started as `serve`
    (code,) = container["AdditionalModelDataSources"]
    assert code["S3DataSource"]["S3Uri"] == f"s3://{world.config.aws.artifact_bucket}/code/{'c0de' * 16}/source/"
    alarms = world.cloudwatch.describe_alarms(AlarmNamePrefix="retrain-intent-v1")["MetricAlarms"]
    assert {a["AlarmName"] for a in alarms} == {"retrain-intent-v1-error-rate", "retrain-intent-v1-p99-latency"}
    p99 = next(a for a in alarms if a["AlarmName"].endswith("p99-latency"))
    assert (p99["ExtendedStatistic"], p99["Threshold"]) == ("p99", world.config.gate.latency_p99_ms_max * 1000)


def test_deploy_shadow_serves_the_champion_with_the_challenger_at_weight_0_and_as_shadow(world):
    from retrain_airflow.aws_deployment import AwsDeployShadowOperator

    stage = world.context.run(AwsDeployShadowOperator(task_id="deploy_shadow", model_name="intent"))
    assert (stage["champion"], stage["challenger"], stage["skipped"]) == (1, 2, False)
    assert weights(world) == {"v1": 1.0, "v2": 0.0}
    described = world.sagemaker.describe_endpoint(EndpointName="retrain-intent")
    config = world.sagemaker.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    assert [v["VariantName"] for v in config["ShadowProductionVariants"]] == ["shadow-v2"]
    assert config["ShadowProductionVariants"][0]["ModelName"] == "retrain-intent-v2"
    entries = ledger.verify(world.store, "intent")
    assert (entries[-1]["action"], entries[-1]["to_version"], entries[-1]["actor"]) == ("shadow", 2, "alice")
    assert ledger.serving_champion(entries) == 1


def test_a_retried_deploy_shadow_reuses_its_endpoint_config(world):
    """A try that failed after creating its config (a worker lost mid-update) is retried: the config's name is the
    run's, and the simulator refuses a name twice as AWS does, so the retry must find it rather than make it."""
    from retrain_airflow.aws_deployment import AwsDeployShadowOperator

    world.context.run(AwsDeployShadowOperator(task_id="deploy_shadow", model_name="intent"))
    first = world.sagemaker.describe_endpoint(EndpointName="retrain-intent")["EndpointConfigName"]
    world.context.run(AwsDeployShadowOperator(task_id="deploy_shadow", model_name="intent"))
    assert world.sagemaker.describe_endpoint(EndpointName="retrain-intent")["EndpointConfigName"] == first
    assert weights(world) == {"v1": 1.0, "v2": 0.0}
    assert [e["action"] for e in ledger.verify(world.store, "intent")] == ["promote", "shadow"]  # recorded once


def test_a_good_challenger_goes_shadow_canary_then_promoted_by_weight(world):
    from retrain_airflow.aws_deployment import AwsObserveOperator
    from retrain_airflow.aws_operators import PromoteModelPackageOperator

    stage = deploy_shadow_and_pass_it(world)
    assert weights(world) == {"v1": 0.95, "v2": 0.05}
    canary = world.config.deployment.canary
    observe = AwsObserveOperator(
        task_id="observe_canary", model_name="intent", variant="canary", upstream="start_canary"
    )
    publish(world, "v2", canary.min_requests, errors=0)
    event = window(world, observe, stage, elapsed_s=canary.window_minutes * 60)  # the window's hour, gone by
    assert event["state"] == "pass", event
    world.context["ti"].xcoms[("observe_canary", "return_value")] = observe.execute_complete(
        world.context, event, stage
    )

    promoted = world.context.run(
        PromoteModelPackageOperator(
            task_id="promote_model",
            model_name="intent",
            job="promote_model",
            upstream_results=("register_model", "await_approval", "gate_on_metrics"),
        )
    )
    assert promoted["serving"]["weights"] == {"v1": 0.0, "v2": 1.0}
    assert weights(world) == {"v1": 0.0, "v2": 1.0}
    described = world.sagemaker.describe_endpoint(EndpointName="retrain-intent")
    assert "ShadowProductionVariants" not in described  # promotion leaves no shadow copying the champion
    entries = ledger.verify(world.store, "intent")
    assert [e["action"] for e in entries] == ["promote", "shadow", "canary", "promote"]
    assert ledger.serving_champion(entries) == 2


def test_a_canary_over_its_error_ceiling_is_rolled_back_by_weight_keeping_its_config(world):
    from airflow.sdk.exceptions import AirflowFailException

    from retrain_airflow.aws_deployment import AwsObserveOperator

    stage = deploy_shadow_and_pass_it(world)
    serving_config = world.sagemaker.describe_endpoint(EndpointName="retrain-intent")["EndpointConfigName"]
    observe = AwsObserveOperator(
        task_id="observe_canary", model_name="intent", variant="canary", upstream="start_canary"
    )
    canary = world.config.deployment.canary
    publish(world, "v2", canary.min_requests, errors=canary.min_requests // 10)  # 10% > the 5% ceiling
    event = window(world, observe, stage)
    assert event["state"] == "rollback", event
    with pytest.raises(AirflowFailException, match=r"rolled back automatically: error rate 10\.0% > 5\.0%"):
        observe.execute_complete(world.context, event, stage)
    assert weights(world) == {"v1": 1.0, "v2": 0.0}
    described = world.sagemaker.describe_endpoint(EndpointName="retrain-intent")
    assert described["EndpointConfigName"] == serving_config
    world.sagemaker.describe_endpoint_config(EndpointConfigName=serving_config)  # never deleted
    entries = ledger.verify(world.store, "intent")
    assert entries[-1]["action"] == "auto_rollback"
    assert entries[-1]["figures"]["errors"] == canary.min_requests // 10
    assert ledger.serving_champion(entries) == 1
    # A retry of the task (Airflow can fail a try after it judged: factory.OBSERVE_RETRY) repeats the verdict without
    # deferring again, and the ledger gets no second entry.
    world.context["ti"].xcoms[("start_canary", "return_value")] = stage
    with pytest.raises(AirflowFailException, match=r"error rate 10\.0% > 5\.0%.*recorded by an earlier try"):
        world.context.run(observe)
    assert len(ledger.verify(world.store, "intent")) == len(entries)


def test_a_latency_alarm_rolls_the_canary_back_before_its_window_ends(world):
    from airflow.sdk.exceptions import AirflowFailException

    from retrain_airflow.aws_deployment import AwsObserveOperator

    stage = deploy_shadow_and_pass_it(world)
    # CloudWatch would set it from ModelLatency's p99; moto evaluates no alarm, so the test sets the state it would.
    world.cloudwatch.set_alarm_state(
        AlarmName="retrain-intent-v2-p99-latency", StateValue="ALARM", StateReason="p99 412000 > 200000.0"
    )
    observe = AwsObserveOperator(
        task_id="observe_canary", model_name="intent", variant="canary", upstream="start_canary"
    )
    event = window(world, observe, stage)
    assert event["state"] == "rollback" and "retrain-intent-v2-p99-latency" in event["reasons"][0], event
    with pytest.raises(AirflowFailException, match="p99-latency is ALARM"):
        observe.execute_complete(world.context, event, stage)
    assert weights(world) == {"v1": 1.0, "v2": 0.0}


def test_a_canary_window_with_too_few_requests_is_inconclusive_and_rolled_back(world):
    from airflow.sdk.exceptions import AirflowFailException

    from retrain_airflow.aws_deployment import AwsObserveOperator

    stage = deploy_shadow_and_pass_it(world)
    canary = world.config.deployment.canary
    publish(world, "v2", 3)
    observe = AwsObserveOperator(
        task_id="observe_canary", model_name="intent", variant="canary", upstream="start_canary"
    )
    event = window(world, observe, stage, elapsed_s=canary.window_minutes * 60)
    assert event["state"] == "inconclusive", event
    with pytest.raises(AirflowFailException, match="INCONCLUSIVE"):
        observe.execute_complete(world.context, event, stage)
    assert weights(world) == {"v1": 1.0, "v2": 0.0}
    assert ledger.verify(world.store, "intent")[-1]["action"] == "inconclusive"


def test_rollback_moves_the_endpoints_traffic_by_weight(world):
    from retrain_airflow.aws_deployment import AwsObserveOperator
    from retrain_airflow.aws_operators import AwsRollbackModelOperator, PromoteModelPackageOperator

    stage = deploy_shadow_and_pass_it(world)
    canary = world.config.deployment.canary
    observe = AwsObserveOperator(
        task_id="observe_canary", model_name="intent", variant="canary", upstream="start_canary"
    )
    publish(world, "v2", canary.min_requests)
    event = window(world, observe, stage, elapsed_s=canary.window_minutes * 60)
    world.context["ti"].xcoms[("observe_canary", "return_value")] = observe.execute_complete(
        world.context, event, stage
    )
    world.context.run(
        PromoteModelPackageOperator(
            task_id="promote_model",
            model_name="intent",
            job="promote_model",
            upstream_results=("register_model", "await_approval", "gate_on_metrics"),
        )
    )
    serving_config = world.sagemaker.describe_endpoint(EndpointName="retrain-intent")["EndpointConfigName"]
    ctx = SimpleNamespace(run_id="manual__rollback", dag_id="rollback_intent")
    result = AwsRollbackModelOperator(task_id="rollback_model", model_name="intent").roll_back(
        world.config, ctx, None, "admin", "v2 misroutes cards"
    )
    assert result["serving"]["weights"] == {"v1": 1.0, "v2": 0.0}
    assert weights(world) == {"v1": 1.0, "v2": 0.0}
    # The old champion was kept at weight 0, so the rollback was a weight move on the config that serves.
    assert world.sagemaker.describe_endpoint(EndpointName="retrain-intent")["EndpointConfigName"] == serving_config
    assert ledger.serving_champion(ledger.verify(world.store, "intent")) == 1


def test_a_model_name_that_serves_other_weights_is_refused(world):
    from retrain_airflow.aws_deployment import endpoint_for

    endpoint = endpoint_for(world.config, LOG)
    with pytest.raises(ValueError, match="refusing to serve other weights"):
        endpoint.ensure_model(1, "s3://elsewhere/model.tar.gz", "1" * 64)


def test_the_simulator_refuses_what_aws_refuses(world):
    """tests/moto_endpoints.py: a name is never reused, and an update names an existing config."""
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="Cannot create already existing endpoint"):
        world.sagemaker.create_endpoint(
            EndpointName="retrain-intent",
            EndpointConfigName=world.sagemaker.describe_endpoint(EndpointName="retrain-intent")["EndpointConfigName"],
        )
    with pytest.raises(ClientError, match="Could not find endpoint configuration"):
        world.sagemaker.update_endpoint(EndpointName="retrain-intent", EndpointConfigName="retrain-intent-nowhere")


def test_observation_defers_to_a_trigger_the_triggerer_can_rebuild(world):
    from airflow.sdk.exceptions import TaskDeferred

    from retrain_airflow.aws_deployment import AwsObserveOperator

    stage = deploy_shadow_and_pass_it(world)
    world.context["ti"].current = "observe_canary"
    operator = AwsObserveOperator(
        task_id="observe_canary", model_name="intent", variant="canary", upstream="start_canary"
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(world.context)
    path, kwargs = deferred.value.trigger.serialize()
    assert path == "retrain_airflow.aws_deployment.CloudWatchWindowTrigger"
    rebuilt = type(deferred.value.trigger)(**json.loads(json.dumps(kwargs)))  # what the triggerer stores and reads
    assert rebuilt.serialize() == (path, kwargs)
    assert kwargs["variant"] == "v2" and kwargs["policy"]["min_agreement"] is None
    assert deferred.value.kwargs == {"stage": stage}


def test_endpoint_requests_are_schema_checked():
    from retrain.aws.locations import CodeBundle
    from retrain.aws.schema import RequestInvalid

    config = load_model("intent")
    code = CodeBundle("retrain-artifacts-123456789012", "d3b10" * 8, "c0de" * 16)
    with pytest.raises(RequestInvalid, match="ModelDataUrl"):
        endpoints.model_request(config.aws, "intent", config.task, 1, "not-an-s3-uri " * 200, "1" * 64, code)
    with pytest.raises(ValueError, match="weight above 0"):
        endpoints.endpoint_config_request(config.aws, "intent", "retrain-intent-x", {1: 0.0})
    assert len(endpoints.endpoint_name("m" * 80)) <= 63
    assert endpoints.version_of_variant("shadow-v12") == 12 and endpoints.version_of_variant("AllTraffic") is None
