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
import uuid
from types import SimpleNamespace

import pytest

from retrain import ledger
from retrain.config import load_model
from retrain.store import S3Store
from tinydata import PROJECT_ROOT

pytestmark = pytest.mark.aws


@pytest.fixture
def promoted_twice(simulator_env, simulator_s3, simulator_buckets, tmp_path, monkeypatch):
    """v1 then v2 promoted: packages Approved on the simulator, archives on S3, two ledger entries."""
    import boto3

    group = f"retrain-intent-{uuid.uuid4().hex[:8]}"
    text = (
        (PROJECT_ROOT / "config" / "models" / "intent.yaml")
        .read_text()
        .replace("model_package_group: retrain-intent", f"model_package_group: {group}")
    )
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "intent.yaml").write_text(text)
    monkeypatch.setenv("RETRAIN_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("RETRAIN_BACKEND", "aws")
    for kind in ("dataset", "artifact", "golden"):
        monkeypatch.setenv(f"RETRAIN_{kind.upper()}_BUCKET", simulator_buckets[kind])
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"region_name": "us-east-1", "endpoint_url": simulator_env},
            }
        ),
    )
    config = load_model("intent")
    sagemaker = boto3.client(
        "sagemaker",
        endpoint_url=simulator_env,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    sagemaker.create_model_package_group(ModelPackageGroupName=group)
    store = S3Store(
        simulator_buckets["dataset"], simulator_buckets["artifact"], simulator_buckets["golden"], client=simulator_s3
    )
    for version in (1, 2):
        key = f"runs/intent/run-{version}/train_model/try-1/model/job-{version}/output/model.tar.gz"
        archive = f"model archive v{version}".encode()
        store.write_once_bytes(key, archive)
        sagemaker.create_model_package(
            ModelPackageGroupName=group,
            ModelApprovalStatus="Approved",
            InferenceSpecification={
                "Containers": [{"Image": config.aws.inference_image_uri, "ModelDataUrl": store.uri(key)}],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
        )
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
    return SimpleNamespace(config=config, store=store, sagemaker=sagemaker, group=group)


def _status(world, version: int) -> str:
    return world.sagemaker.describe_model_package(
        ModelPackageName=f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{world.group}/{version}"
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
