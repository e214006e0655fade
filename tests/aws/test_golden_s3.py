"""Golden sets on S3 (moto, an AWS simulator): an Object Lock bucket, and every read checks the pin first."""

from __future__ import annotations

import hashlib
import json

import pytest

from retrain.store import IntegrityError, LocalStore, S3Store, WriteOnceError, content_digest

pytestmark = pytest.mark.aws

GOLDEN = {
    "golden.jsonl": b'{"text": "where is my card", "label": "card_arrival"}\n',
    "labels.json": b'["card_arrival"]\n',
}
KEY = "golden/intent/g1"


def golden_object(store: S3Store, name: str) -> str:
    return f"{KEY}/{name}"


@pytest.fixture
def published(s3_store):
    """A golden version published into the Object Lock bucket; returns its manifest."""
    return s3_store.publish_version(KEY, GOLDEN, {"golden_version": "g1", "model": "intent"})


def test_golden_keys_live_in_the_locked_bucket_and_nothing_else_does(s3_store, simulator_buckets, published):
    assert s3_store.uri(KEY) == f"s3://{simulator_buckets['golden']}/{KEY}"
    assert s3_store.uri("datasets/intent/ds-1") == f"s3://{simulator_buckets['dataset']}/datasets/intent/ds-1"
    head = s3_store.client.head_object(Bucket=simulator_buckets["golden"], Key=golden_object(s3_store, "golden.jsonl"))
    assert head["ObjectLockMode"] == "COMPLIANCE"  # the bucket's default retention applied to the published object
    assert s3_store.list_keys("golden/intent") == [KEY]


def test_a_golden_read_returns_content_only_against_the_pin(s3_store, published):
    manifest, files = s3_store.read_golden(KEY, published["content_sha256"])
    assert files == GOLDEN and manifest["golden_version"] == "g1"
    with pytest.raises(IntegrityError, match="refusing an unpinned golden read"):
        s3_store.read_golden(KEY, "")
    with pytest.raises(
        IntegrityError, match=rf"{s3_store.uri(KEY + '/manifest.json')}: content_sha256 .* differs from the pinned"
    ):
        s3_store.read_golden(KEY, "a" * 64)
    with pytest.raises(ValueError, match="not a golden key"):
        s3_store.read_golden("datasets/intent/ds-1", published["content_sha256"])


def test_a_new_version_on_top_of_a_locked_golden_object_is_refused_on_read(s3_store, simulator_buckets, published):
    # Object Lock keeps every stored version, but PutObject without a condition still stacks a new
    # current version on top: that is the tampering a reader can meet, and the hashes must catch it.
    s3_store.client.put_object(
        Bucket=simulator_buckets["golden"],
        Key=golden_object(s3_store, "golden.jsonl"),
        Body=b'{"text": "x", "label": "y"}\n',
    )
    tampered = rf"s3://{simulator_buckets['golden']}/{KEY}/golden\.jsonl: sha256 .* does not match the manifest"
    with pytest.raises(IntegrityError, match=tampered):
        s3_store.read_golden(KEY, published["content_sha256"])
    with pytest.raises(IntegrityError, match=tampered):
        s3_store.materialize_version(KEY, published["content_sha256"])


def test_a_forger_who_rewrites_the_manifest_too_is_stopped_by_the_pin(s3_store, simulator_buckets, published):
    forged_file = b'{"text": "x", "label": "y"}\n'
    forged = json.loads(json.dumps(published))
    forged["files"]["golden.jsonl"] = hashlib.sha256(forged_file).hexdigest()
    forged["content_sha256"] = content_digest(forged["files"])  # a self-consistent manifest
    bucket = simulator_buckets["golden"]
    s3_store.client.put_object(Bucket=bucket, Key=golden_object(s3_store, "golden.jsonl"), Body=forged_file)
    s3_store.client.put_object(
        Bucket=bucket, Key=golden_object(s3_store, "manifest.json"), Body=json.dumps(forged).encode()
    )
    assert (
        s3_store.verify_version(KEY)["content_sha256"] == forged["content_sha256"]
    )  # consistent, so only the pin can tell
    with pytest.raises(IntegrityError, match=r"manifest\.json: content_sha256 .* differs from the pinned"):
        s3_store.read_golden(KEY, published["content_sha256"])


def test_tampering_in_a_bucket_without_lock_is_refused_too(simulator_s3, simulator_buckets):
    store = S3Store(
        simulator_buckets["dataset"],
        simulator_buckets["artifact"],
        golden_bucket=simulator_buckets["plain"],
        client=simulator_s3,
    )
    manifest = store.publish_version(KEY, GOLDEN, {"golden_version": "g1"})
    simulator_s3.put_object(
        Bucket=simulator_buckets["plain"], Key=f"{KEY}/labels.json", Body=b'["other"]\n'
    )  # a plain overwrite
    with pytest.raises(
        IntegrityError, match=rf"s3://{simulator_buckets['plain']}/{KEY}/labels\.json: sha256 .* does not match"
    ):
        store.read_golden(KEY, manifest["content_sha256"])


def test_object_lock_refuses_deleting_or_replacing_a_stored_golden_version(s3_store, simulator_buckets, published):
    from botocore.exceptions import ClientError

    bucket, key = simulator_buckets["golden"], golden_object(s3_store, "golden.jsonl")
    client = s3_store.client
    original = client.head_object(Bucket=bucket, Key=key)["VersionId"]
    with pytest.raises(ClientError, match="AccessDenied"):
        client.delete_object(Bucket=bucket, Key=key, VersionId=original)
    with pytest.raises(WriteOnceError, match=r"golden\.jsonl: already exists and is write-once"):
        s3_store.write_once_bytes(f"{KEY}/golden.jsonl", b"replacement")
    client.put_object(Bucket=bucket, Key=key, Body=b"tampered")  # stacks a new version; the locked one stays
    assert client.get_object(Bucket=bucket, Key=key, VersionId=original)["Body"].read() == GOLDEN["golden.jsonl"]
    with pytest.raises(ClientError, match="AccessDenied"):
        client.delete_object(Bucket=bucket, Key=key, VersionId=original)


def test_the_same_files_have_the_same_content_digest_on_both_stores(s3_store, store, tmp_path):
    source = tmp_path / "golden.jsonl"
    source.write_bytes(GOLDEN["golden.jsonl"])
    files = {**GOLDEN, "golden.jsonl": source}
    on_s3 = s3_store.publish_version(KEY, files, {"golden_version": "g1"})
    on_disk = store.publish_version(KEY, GOLDEN, {"golden_version": "g1"})
    assert isinstance(store, LocalStore)
    assert (on_s3["files"], on_s3["content_sha256"]) == (on_disk["files"], on_disk["content_sha256"])
    # A pin taken on one backend holds on the other, and a downloaded copy verifies locally.
    assert s3_store.read_golden(KEY, on_disk["content_sha256"])[1] == store.read_golden(KEY, on_s3["content_sha256"])[1]
    from retrain.store import verify_tree

    assert verify_tree(
        s3_store.materialize_version(KEY, on_disk["content_sha256"], dest=tmp_path / "copy"), on_disk["content_sha256"]
    )
