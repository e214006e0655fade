"""get_store() on the aws backend reaches S3 through boto3's own environment (here moto, an AWS simulator)."""

from __future__ import annotations

import pytest

from retrain import ledger
from retrain.stores import get_store, store_for

pytestmark = pytest.mark.aws


def test_get_store_builds_its_client_from_the_environment(simulator_env, simulator_buckets, monkeypatch):
    monkeypatch.setenv("RETRAIN_BACKEND", "aws")
    monkeypatch.setenv("RETRAIN_S3_BUCKET", simulator_buckets["main"])
    monkeypatch.setenv("RETRAIN_S3_PREFIX", "deploy-a")
    monkeypatch.setenv("RETRAIN_GOLDEN_BUCKET", simulator_buckets["golden"])
    store = get_store()  # no client passed: boto3 finds the simulator through AWS_ENDPOINT_URL
    manifest = store.publish_version("golden/intent/g1", {"golden.jsonl": b"{}\n"}, {"golden_version": "g1"})
    ledger.append(store, "intent", action="promote", to_version=1, actor="alice", reason="first", model_dir="s3://m/1")

    job_side = store_for(f"s3://{simulator_buckets['main']}/deploy-a")  # what a job rebuilds from --store-root
    assert job_side.read_golden("golden/intent/g1", manifest["content_sha256"])[1] == {"golden.jsonl": b"{}\n"}
    assert [e["actor"] for e in ledger.verify(job_side, "intent")] == ["alice"]
