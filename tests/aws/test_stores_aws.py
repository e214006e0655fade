"""get_store() on the aws backend reaches S3 through boto3's own environment (here moto, an AWS simulator)."""

from __future__ import annotations

import pytest

from retrain import ledger
from retrain.store import get_store, store_argument, store_for

pytestmark = pytest.mark.aws


def keys_in(client, bucket: str) -> list[str]:
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", []))


@pytest.fixture
def aws_env(simulator_env, simulator_buckets, monkeypatch):
    monkeypatch.setenv("RETRAIN_BACKEND", "aws")
    monkeypatch.setenv("RETRAIN_DATASET_BUCKET", simulator_buckets["dataset"])
    monkeypatch.setenv("RETRAIN_ARTIFACT_BUCKET", simulator_buckets["artifact"])
    monkeypatch.setenv("RETRAIN_GOLDEN_BUCKET", simulator_buckets["golden"])
    for retired in ("RETRAIN_S3_BUCKET", "RETRAIN_S3_PREFIX"):
        monkeypatch.delenv(retired, raising=False)
    return simulator_buckets


def test_get_store_writes_each_key_family_to_its_own_bucket(aws_env, simulator_s3):
    store = get_store()  # no client passed: boto3 finds the simulator through AWS_ENDPOINT_URL
    store.write_once_bytes("raw/intent/dt=2026-01-05/part-0.csv", b"text,category\nhi,greet\n")
    store.publish_version("datasets/intent/ds-1", {"train.jsonl": b"{}\n"}, {"dataset_version": "ds-1"})
    store.write_json("runs/intent/r1/gate.json", {"verdict": "accept"})
    ledger.append(store, "intent", action="promote", to_version=1, actor="alice", reason="first", model_dir="s3://m/1")
    golden = store.publish_version("golden/intent/g1", {"golden.jsonl": b"{}\n"}, {"golden_version": "g1"})

    assert keys_in(simulator_s3, aws_env["dataset"]) == [
        "datasets/intent/ds-1/manifest.json",
        "datasets/intent/ds-1/train.jsonl",
        "raw/intent/dt=2026-01-05/part-0.csv",
    ]
    assert keys_in(simulator_s3, aws_env["artifact"]) == ["ledger/intent/00000001.json", "runs/intent/r1/gate.json"]
    assert keys_in(simulator_s3, aws_env["golden"]) == [
        "golden/intent/g1/golden.jsonl",
        "golden/intent/g1/manifest.json",
    ]

    job_side = store_for(store_argument(store))  # what a job rebuilds from --store-root and its environment
    assert job_side.read_golden("golden/intent/g1", golden["content_sha256"])[1] == {"golden.jsonl": b"{}\n"}
    assert [e["actor"] for e in ledger.verify(job_side, "intent")] == ["alice"]
    assert job_side.list_keys("raw/intent") == ["raw/intent/dt=2026-01-05"]
