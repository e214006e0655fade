"""S3Store on moto, an AWS simulator: write-once by conditional PUT, manifest-last publication."""

from __future__ import annotations

import hashlib

import pytest

from retrain.store import IntegrityError, S3Store, WriteOnceError

pytestmark = pytest.mark.aws

FILES = {"data.jsonl": b'{"text": "a", "label": "x"}\n', "labels/classes.json": b'["x", "y"]\n'}


def object_body(client, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_second_write_once_gets_412_and_the_first_stays(s3_store, simulator_s3, simulator_buckets):
    uri = s3_store.write_once_bytes("datasets/intent/ds-1/data.jsonl", b"first")
    assert uri == f"s3://{simulator_buckets['dataset']}/datasets/intent/ds-1/data.jsonl"
    with pytest.raises(
        WriteOnceError,
        match=rf"{uri}: already exists and is write-once; refusing to overwrite \(S3 answered PreconditionFailed\)",
    ):
        s3_store.write_once_bytes("datasets/intent/ds-1/data.jsonl", b"second")
    assert object_body(simulator_s3, simulator_buckets["dataset"], "datasets/intent/ds-1/data.jsonl") == b"first"


def test_run_scratch_is_overwritable_json_and_missing_keys_name_their_uri(s3_store):
    s3_store.write_json("runs/intent/r1/gate.json", {"verdict": "reject"})
    s3_store.write_json("runs/intent/r1/gate.json", {"verdict": "accept"})
    assert s3_store.read_json("runs/intent/r1/gate.json") == {"verdict": "accept"}
    assert s3_store.exists("runs/intent/r1/gate.json") and s3_store.exists("runs/intent/r1")
    assert not s3_store.exists("runs/intent/r2")
    with pytest.raises(FileNotFoundError, match=rf"{s3_store.uri('runs/intent/r2/gate.json')}: no such object"):
        s3_store.read_json("runs/intent/r2/gate.json")


def test_keys_cannot_escape_their_bucket_root(s3_store):
    for key in ("../outside", "/etc/passwd", "raw/../../x", "raw//x", ""):
        with pytest.raises(ValueError, match="invalid store key"):
            s3_store.uri(key)


def test_a_key_no_bucket_holds_is_refused_by_name_and_rule(s3_store):
    with pytest.raises(
        ValueError,
        match=r"store key 'scratch/x': 'scratch' is not a known top-level prefix; rule: the first key segment picks "
        r"the bucket: raw/ → dataset",
    ):
        s3_store.write_once_bytes("scratch/x", b"x")


def test_publish_uploads_every_file_write_once_and_the_manifest_last(s3_store, simulator_s3):
    puts = []
    simulator_s3.meta.events.register(
        "provide-client-params.s3.PutObject",
        lambda params, **_: puts.append((params["Key"], params.get("IfNoneMatch"))),
    )
    manifest = s3_store.publish_version("datasets/intent/ds-1", FILES, {"dataset_version": "ds-1"})

    assert [key for key, _ in puts] == [
        "datasets/intent/.ds-1.publishing",  # the claim
        "datasets/intent/ds-1/data.jsonl",
        "datasets/intent/ds-1/labels/classes.json",
        "datasets/intent/ds-1/manifest.json",  # the commit, last
    ]
    assert all(condition == "*" for _, condition in puts)
    assert manifest["files"] == {name: hashlib.sha256(data).hexdigest() for name, data in FILES.items()}
    assert s3_store.read_json("datasets/intent/ds-1/manifest.json") == manifest
    assert s3_store.list_keys("datasets/intent") == ["datasets/intent/ds-1"]  # the claim marker is gone
    assert s3_store.verify_version("datasets/intent/ds-1", manifest["content_sha256"]) == manifest
    assert s3_store.read_version("datasets/intent/ds-1")[1] == FILES


def test_a_published_version_is_immutable(s3_store):
    first = s3_store.publish_version("datasets/intent/ds-1", FILES, {"dataset_version": "ds-1"})
    with pytest.raises(WriteOnceError, match=rf"{s3_store.uri('datasets/intent/ds-1')}: version already exists"):
        s3_store.publish_version("datasets/intent/ds-1", {"data.jsonl": b"other\n"}, {"dataset_version": "ds-1"})
    assert s3_store.verify_version("datasets/intent/ds-1", first["content_sha256"]) == first
    assert s3_store.pending_versions("datasets/intent") == []


def leave_a_dead_publish(client, bucket: str) -> None:
    """What a publisher that died after its first file leaves behind: the claim and one file, no manifest."""
    client.put_object(Bucket=bucket, Key="datasets/intent/.ds-2.publishing", Body=b'{"key": "datasets/intent/ds-2"}')
    client.put_object(Bucket=bucket, Key="datasets/intent/ds-2/data.jsonl", Body=b"half\n")


def test_a_version_without_its_manifest_is_absent_until_abandoned(s3_store, simulator_s3, simulator_buckets):
    s3_store.publish_version("datasets/intent/ds-1", FILES, {"dataset_version": "ds-1"})
    leave_a_dead_publish(simulator_s3, simulator_buckets["dataset"])

    assert s3_store.list_keys("datasets/intent") == ["datasets/intent/ds-1"]
    assert not s3_store.exists("datasets/intent/ds-2")
    with pytest.raises(IntegrityError, match=r"ds-2/manifest\.json: manifest missing \(not published\)"):
        s3_store.read_version("datasets/intent/ds-2")
    assert s3_store.pending_versions("datasets/intent") == ["datasets/intent/ds-2"]
    with pytest.raises(WriteOnceError, match="another publish of this version started .* abandon_version"):
        s3_store.publish_version("datasets/intent/ds-2", FILES, {"dataset_version": "ds-2"})

    with pytest.raises(WriteOnceError, match="is published .* refusing to remove it"):
        s3_store.abandon_version("datasets/intent/ds-1")
    assert sorted(s3_store.abandon_version("datasets/intent/ds-2")) == [
        "datasets/intent/.ds-2.publishing",
        "datasets/intent/ds-2/data.jsonl",
    ]
    manifest = s3_store.publish_version("datasets/intent/ds-2", FILES, {"dataset_version": "ds-2"})
    assert s3_store.list_keys("datasets/intent") == ["datasets/intent/ds-1", "datasets/intent/ds-2"]
    assert s3_store.verify_version("datasets/intent/ds-2", manifest["content_sha256"])


def test_a_failed_publish_removes_what_it_uploaded(s3_store, simulator_s3, simulator_buckets):
    # A stray object where the second file goes makes that conditional PUT fail mid-publish.
    simulator_s3.put_object(
        Bucket=simulator_buckets["dataset"], Key="datasets/intent/ds-3/labels/classes.json", Body=b"stray"
    )
    with pytest.raises(WriteOnceError, match=r"ds-3/labels/classes\.json: already exists and is write-once"):
        s3_store.publish_version("datasets/intent/ds-3", FILES, {"dataset_version": "ds-3"})
    left = simulator_s3.list_objects_v2(Bucket=simulator_buckets["dataset"], Prefix="datasets/intent/")
    assert left.get("KeyCount") == 0  # no files, no manifest, no claim marker
    assert not s3_store.exists("datasets/intent/ds-3") and s3_store.pending_versions("datasets/intent") == []


def test_bad_file_names_are_refused_before_anything_is_claimed(s3_store):
    for name in ("../escape", "manifest.json", "a//b"):
        with pytest.raises(ValueError, match="manifest.json|invalid file name"):
            s3_store.publish_version("datasets/intent/ds-4", {name: b"x"}, {})
    assert s3_store.pending_versions("datasets/intent") == []


def test_verify_names_the_tampered_missing_or_added_object(s3_store, simulator_s3, simulator_buckets):
    manifest = s3_store.publish_version("datasets/intent/ds-1", FILES, {"dataset_version": "ds-1"})
    bucket, base = simulator_buckets["dataset"], "datasets/intent/ds-1"
    with pytest.raises(IntegrityError, match="differs from the pinned"):
        s3_store.verify_version("datasets/intent/ds-1", "0" * 64)

    simulator_s3.put_object(Bucket=bucket, Key=f"{base}/extra.txt", Body=b"x")
    with pytest.raises(IntegrityError, match=rf"s3://{bucket}/{base}/extra\.txt: not listed in the manifest"):
        s3_store.verify_version("datasets/intent/ds-1")
    simulator_s3.delete_object(Bucket=bucket, Key=f"{base}/extra.txt")

    simulator_s3.put_object(Bucket=bucket, Key=f"{base}/data.jsonl", Body=b"tampered\n")
    with pytest.raises(
        IntegrityError, match=rf"s3://{bucket}/{base}/data\.jsonl: sha256 .* does not match the manifest"
    ):
        s3_store.verify_version("datasets/intent/ds-1", manifest["content_sha256"])
    with pytest.raises(IntegrityError, match=r"data\.jsonl: sha256 .* does not match"):
        s3_store.read_version("datasets/intent/ds-1")

    simulator_s3.delete_object(Bucket=bucket, Key=f"{base}/data.jsonl")
    with pytest.raises(IntegrityError, match=r"data\.jsonl: listed in the manifest but missing"):
        s3_store.verify_version("datasets/intent/ds-1")


def test_materialized_version_is_a_verified_local_copy(
    s3_store, simulator_s3, simulator_buckets, tmp_path, monkeypatch
):
    import tempfile

    from retrain.store import verify_tree

    manifest = s3_store.publish_version("datasets/intent/ds-1", FILES, {"dataset_version": "ds-1"})
    local = s3_store.materialize_version("datasets/intent/ds-1", manifest["content_sha256"], dest=tmp_path / "ds-1")
    assert (local / "labels" / "classes.json").read_bytes() == FILES["labels/classes.json"]
    assert verify_tree(local, manifest["content_sha256"]) == manifest

    simulator_s3.put_object(
        Bucket=simulator_buckets["dataset"], Key="datasets/intent/ds-1/data.jsonl", Body=b"tampered\n"
    )
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(IntegrityError, match=r"data\.jsonl: sha256"):
        s3_store.materialize_version("datasets/intent/ds-1")
    assert list(scratch.iterdir()) == []  # nothing of the refused download is left to read


def test_list_keys_pages_through_large_prefixes(simulator_s3, simulator_buckets):
    store = S3Store(
        simulator_buckets["plain"], simulator_buckets["artifact"], simulator_buckets["golden"], client=simulator_s3
    )
    store.list_page_size = 7  # several ListObjectsV2 pages without uploading thousands of objects
    pages = []
    simulator_s3.meta.events.register(
        "after-call.s3.ListObjectsV2", lambda parsed, **_: pages.append(parsed.get("KeyCount"))
    )
    for day in range(1, 24):
        simulator_s3.put_object(Bucket=simulator_buckets["plain"], Key=f"raw/intent/dt={day:02d}/part.csv", Body=b"")
    simulator_s3.put_object(Bucket=simulator_buckets["plain"], Key="raw/intent/README", Body=b"")
    keys = store.list_keys("raw/intent")
    assert len(pages) == 4  # 24 children in pages of 7
    assert keys == sorted([f"raw/intent/dt={day:02d}" for day in range(1, 24)] + ["raw/intent/README"])


def test_every_object_the_store_writes_is_encrypted_under_the_deployments_key(simulator_s3, simulator_buckets):
    """All writes go through one PutObject builder, checked against S3's API model before it is sent, with SSE-KMS
    under the config's key: the store once sent its own put_object with no key, and the checked builder had no
    caller."""
    from retrain import ledger

    key_arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    buckets = simulator_buckets
    names = (buckets["dataset"], buckets["artifact"], buckets["golden"])
    store = S3Store(*names, client=simulator_s3, kms_key_arn=key_arn)
    store.write_once_bytes("raw/intent/dt=2026-09-07/part-00000.csv", b"text,category\nhi,greet\n")
    store.write_json("runs/intent/r1/gate.json", {"decision": "pass"})
    store.publish_version("datasets/intent/ds-1", FILES, {"dataset_version": "ds-1"})
    store.publish_version("golden/intent/v1", FILES, {"golden_version": "v1"})
    ledger.append(store, "intent", action="promote", to_version=1, actor="alice", reason="first", model_dir="s3://m/1")
    written = [
        (bucket, item["Key"])
        for bucket in names
        for item in simulator_s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    ]
    assert len(written) == 9  # raw, gate, two versions of two files and a manifest, one ledger entry
    for bucket, key in written:
        head = simulator_s3.head_object(Bucket=bucket, Key=key)
        assert (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")) == ("aws:kms", key_arn), (bucket, key)


def test_the_store_reads_its_kms_key_from_the_deployments_environment(monkeypatch):
    from retrain.store import get_store, store_for

    monkeypatch.setenv("RETRAIN_BACKEND", "aws")
    for name, value in {
        "RETRAIN_DATASET_BUCKET": "d-bucket",
        "RETRAIN_ARTIFACT_BUCKET": "a-bucket",
        "RETRAIN_GOLDEN_BUCKET": "g-bucket",
        "RETRAIN_KMS_KEY_ARN": "arn:aws:kms:us-east-1:123456789012:key/k",
    }.items():
        monkeypatch.setenv(name, value)
    assert get_store().kms_key_arn == "arn:aws:kms:us-east-1:123456789012:key/k"
    monkeypatch.delenv("RETRAIN_KMS_KEY_ARN")
    assert store_for("s3://d-bucket", "a-bucket", "g-bucket", "arn:aws:kms:us-east-1:1:key/glue").kms_key_arn.endswith(
        "/glue"
    )  # Glue has no environment: build_dataset takes it as --kms-key-arn
