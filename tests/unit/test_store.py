"""The local object store: write-once keys, atomic publication, tamper detection."""

from __future__ import annotations

import pytest

from retrain.store import IntegrityError, WriteOnceError, verify_tree, write_manifest_and_publish


def test_write_once_refuses_second_write_and_keeps_the_first(store):
    store.write_once_bytes("ledger/intent.jsonl", b"first")
    with pytest.raises(WriteOnceError, match="write-once"):
        store.write_once_bytes("ledger/intent.jsonl", b"second")
    assert store.path("ledger/intent.jsonl").read_bytes() == b"first"
    assert [p.name for p in store.path("ledger").iterdir()] == ["intent.jsonl"]  # no temp files left


def publish(store, key, content="a\n"):
    staging = store.staging_dir(key)
    (staging / "data.jsonl").write_text(content)
    return write_manifest_and_publish(store, staging, key, {"version": key})


def test_published_version_is_immutable(store):
    manifest = publish(store, "datasets/intent/ds-1")
    with pytest.raises(WriteOnceError, match="already exists"):
        publish(store, "datasets/intent/ds-1", "b\n")
    assert store.path("datasets/intent/ds-1/data.jsonl").read_text() == "a\n"
    assert verify_tree(store.path("datasets/intent/ds-1"))["content_sha256"] == manifest["content_sha256"]
    assert store.list_keys("datasets/intent") == ["datasets/intent/ds-1"]  # staging dir cleaned up


def test_verify_detects_tampering_missing_and_added_files(store):
    manifest = publish(store, "golden/intent/v1")
    root = store.path("golden/intent/v1")
    with pytest.raises(IntegrityError, match="differs from the pinned"):
        verify_tree(root, "0" * 64)
    assert verify_tree(root, manifest["content_sha256"])
    (root / "extra.txt").write_text("x")
    with pytest.raises(IntegrityError, match="extra.txt: not listed"):
        verify_tree(root)
    (root / "extra.txt").unlink()
    (root / "data.jsonl").write_text("tampered\n")
    with pytest.raises(IntegrityError, match=r"data\.jsonl: sha256 .* does not match"):
        verify_tree(root)
    (root / "data.jsonl").unlink()
    with pytest.raises(IntegrityError, match="missing"):
        verify_tree(root)


def test_keys_cannot_escape_the_root(store):
    for key in ("../outside", "/etc/passwd", "raw/../../x"):
        with pytest.raises(ValueError, match="invalid store key"):
            store.path(key)
