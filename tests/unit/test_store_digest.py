"""One content digest for a version, whichever way its files are given and whichever store holds them."""

from __future__ import annotations

import hashlib

import pytest

from retrain.store import (
    IntegrityError,
    canonical_json,
    content_digest,
    digest_sources,
    tree_digest,
)

FILES = {"data.jsonl": b'{"text": "a"}\n', "labels/classes.json": b'["x"]\n', "z.bin": b"\x00\x01"}


def test_content_digest_is_sha256_of_the_canonical_relpath_to_hash_map():
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in FILES.items()}
    assert content_digest(hashes) == hashlib.sha256(canonical_json(hashes)).hexdigest()
    assert content_digest(dict(reversed(list(hashes.items())))) == content_digest(
        hashes
    )  # order of listing is irrelevant
    assert content_digest({**hashes, "data.jsonl": "0" * 64}) != content_digest(hashes)
    assert content_digest(
        {"renamed.jsonl" if k == "data.jsonl" else k: v for k, v in hashes.items()}
    ) != content_digest(hashes)


def test_bytes_paths_and_a_directory_tree_give_the_same_digest(tmp_path):
    """digest_sources (what S3Store.publish_version hashes) agrees with tree_digest (what LocalStore publishes)."""
    root = tmp_path / "tree"
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    from_bytes = digest_sources(FILES)
    from_paths = digest_sources({name: root / name for name in FILES})
    assert from_bytes == from_paths == tree_digest(root)


def test_local_publish_version_records_that_digest_and_verifies(store, tmp_path):
    source = tmp_path / "big.jsonl"
    source.write_bytes(FILES["data.jsonl"])
    files = {**FILES, "data.jsonl": source}  # a Path is copied, bytes are written
    manifest = store.publish_version("golden/intent/v1", files, {"golden_version": "v1"})
    assert manifest["content_sha256"] == digest_sources(FILES)[0]
    assert store.verify_version("golden/intent/v1", manifest["content_sha256"]) == manifest
    assert store.read_golden("golden/intent/v1", manifest["content_sha256"])[1] == FILES
    assert store.materialize_version("golden/intent/v1", manifest["content_sha256"]) == store.path("golden/intent/v1")
    assert store.uri("golden/intent/v1") == str(store.path("golden/intent/v1"))


def test_local_golden_reads_need_the_pin_and_refuse_tampering(store):
    manifest = store.publish_version("golden/intent/v1", FILES, {"golden_version": "v1"})
    with pytest.raises(IntegrityError, match="refusing an unpinned golden read"):
        store.read_golden("golden/intent/v1", "")
    with pytest.raises(IntegrityError, match="differs from the pinned"):
        store.read_golden("golden/intent/v1", "f" * 64)
    store.path("golden/intent/v1/z.bin").write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match=r"golden/intent/v1/z\.bin: sha256 .* does not match"):
        store.read_golden("golden/intent/v1", manifest["content_sha256"])


def test_file_names_inside_a_version_are_checked(store):
    for name in ("../x", "/abs", "a//b", "manifest.json", "a\\b"):
        with pytest.raises(ValueError, match="invalid file name|manifest.json"):
            digest_sources({name: b"x"})
    with pytest.raises(ValueError):
        store.publish_version("datasets/intent/ds-1", {"../x": b"x"}, {})
    assert list(store.path("datasets/intent").iterdir()) == []  # the staging dir was removed
