"""rollback_<model> on the aws backend, against moto (an AWS simulator), never AWS.

Two promoted versions sit in the S3 ledger, with their model packages Approved in the simulator's
SageMaker Model Registry and their model.tar.gz objects on S3. Rolling back rejects the serving
package, approves the target, and appends the ledger; an archive that changed since it was
approved is refused before anything changes. The archives are opaque bytes here: the rollback
checks their recorded sha256, and never loads weights in the Airflow worker.
"""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import pytest

from retrain import ledger
from retrain.config import load_model
from retrain.store import S3Store
from simulated_account import SimulatedAccount, register_package, shipped_config

pytestmark = pytest.mark.aws


@pytest.fixture
def promoted_twice(moto_simulator_endpoint, tmp_path, monkeypatch):
    """v1 then v2 promoted: packages Approved on the simulator, archives on S3, two ledger entries. The shipped intent
    config, in its own simulated account (tests/simulated_account.py)."""
    account = SimulatedAccount.create(moto_simulator_endpoint)
    (tmp_path / "config").mkdir()
    shipped_config(tmp_path / "config", "intent", account.account_id)
    monkeypatch.setenv("RETRAIN_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("RETRAIN_BACKEND", "aws")
    monkeypatch.setenv("RETRAIN_AWS_CHECK_INTERVAL", "1")
    monkeypatch.setenv("RETRAIN_GIT_SHA", "d3b10" * 8)  # the deployed code, as startup.sh exports it: the endpoint's
    monkeypatch.setenv("RETRAIN_CODE_DIGEST", "c0de" * 16)  # Models mount its tree
    for name, value in account.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(account.airflow_connection()))
    config = load_model("intent")
    aws = config.aws
    for kind in ("dataset", "artifact", "golden"):
        monkeypatch.setenv(f"RETRAIN_{kind.upper()}_BUCKET", getattr(aws, f"{kind}_bucket"))
    account.provision([config])
    sagemaker, group = account.client("sagemaker"), aws.model_package_group
    store = S3Store(aws.dataset_bucket, aws.artifact_bucket, aws.golden_bucket, client=account.client("s3"))
    for version in (1, 2):
        key = f"runs/intent/run-{version}/train_model/try-1/model/job-{version}/output/model.tar.gz"
        archive = f"model archive v{version}".encode()
        store.write_once_bytes(key, archive)
        register_package(sagemaker, config.aws, store.uri(key), "Approved")
        ledger.append(
            store,
            "intent",
            action="promote",
            to_version=version,
            actor="alice",
            reason=f"v{version} approved",
            model_dir=store.uri(key),
            weights_digest=f"{version}" * 64,
            archive_sha256=hashlib.sha256(archive).hexdigest(),
        )
    return SimpleNamespace(config=config, store=store, sagemaker=sagemaker, group=group, account=account)


def _status(world, version: int) -> str:
    return world.sagemaker.describe_model_package(
        ModelPackageName=f"arn:aws:sagemaker:us-east-1:{world.account.account_id}:model-package/{world.group}/{version}"
    )["ModelApprovalStatus"]


def _roll_back(world, target):
    from retrain_airflow.aws_operators import AwsRollbackModelOperator

    ctx = SimpleNamespace(run_id="manual__rollback", dag_id="rollback_intent")
    return AwsRollbackModelOperator(task_id="rollback_model", model_name="intent").roll_back(
        world.config, ctx, target, "admin", "v2 misroutes cards"
    )


def test_rollback_rejects_the_serving_package_approves_the_target_and_appends_the_ledger(promoted_twice):
    result = _roll_back(promoted_twice, None)  # default: the previous champion
    assert (result["champion"], result["previous"]) == (1, 2)
    assert (_status(promoted_twice, 1), _status(promoted_twice, 2)) == ("Approved", "Rejected")
    entries = ledger.verify(promoted_twice.store, "intent")
    assert [(e["action"], e["to_version"], e["actor"]) for e in entries] == [
        ("promote", 1, "alice"),
        ("promote", 2, "alice"),
        ("rollback", 1, "admin"),
    ]
    assert entries[-1]["archive_sha256"] == entries[0]["archive_sha256"]


def test_rollback_sends_the_endpoints_traffic_to_the_target(promoted_twice):
    """No endpoint served yet (v1 and v2 were promoted before the deployment stage existed): the rollback makes one,
    serving the target alone; test_deployment_simulated.py covers the weight move on a serving endpoint."""
    result = _roll_back(promoted_twice, 1)
    assert result["serving"]["weights"] == {"v1": 1.0}
    described = promoted_twice.sagemaker.describe_endpoint(EndpointName="retrain-intent")
    assert [(v["VariantName"], v["CurrentWeight"]) for v in described["ProductionVariants"]] == [("v1", 1.0)]


def test_rollback_to_an_archive_that_changed_since_approval_changes_nothing(promoted_twice):
    from airflow.sdk.exceptions import AirflowFailException

    store = promoted_twice.store
    entries = ledger.verify(store, "intent")
    bucket, key = store._locate(store.key_of(entries[0]["model_dir"]))
    store.client.put_object(
        Bucket=bucket, Key=key, Body=b"tampered weights"
    )  # what the ledger cannot stop, it must notice
    with pytest.raises(
        AirflowFailException, match=r"intent v1: .*model.tar.gz has sha256 .* was approved; nothing was changed"
    ):
        _roll_back(promoted_twice, 1)
    assert (_status(promoted_twice, 1), _status(promoted_twice, 2)) == ("Approved", "Approved")
    assert len(ledger.verify(store, "intent")) == 2
