"""snapshot_raw on S3 (moto, an AWS simulator) gives the manifest it gives on disk for the same files."""

from __future__ import annotations

import codecs
from datetime import UTC, datetime

import pytest

from retrain.snapshot import RawDataError, snapshot_raw, verify_raw_files
from retrain.store import LocalStore

pytestmark = pytest.mark.aws

START, END = datetime(2026, 9, 14, tzinfo=UTC), datetime(2026, 9, 21, tzinfo=UTC)
# History before the interval, the interval itself (a BOM and a quoted newline), and a partition
# at the exclusive end that neither snapshot may see.
RAW = {
    "raw/intent/dt=2026-09-07/part-00000.csv": b"text,category\nhello there,card_arrival\n",
    "raw/intent/dt=2026-09-14/part-00000.csv": codecs.BOM_UTF8 + b'text,category\na,b\n"multi\nline",c\n',
    "raw/intent/dt=2026-09-14/part-00001.csv": b"text,category\nwhere is my card,card_arrival\n",
    "raw/intent/dt=2026-09-21/part-00000.csv": b"text,category\nlater,x\n",
}


def land_everywhere(local: LocalStore, s3_store) -> None:
    for key, body in RAW.items():
        path = local.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        s3_store.write_once_bytes(key, body)


def test_the_same_raw_files_give_the_same_manifest_on_both_stores(s3_store, simulator_s3, simulator_buckets, tmp_path):
    local = LocalStore(tmp_path / "store")
    land_everywhere(local, s3_store)
    # A hidden object (an uploader's temp file) is not data on either side.
    (local.path("raw/intent/dt=2026-09-14") / ".part-00002.csv.tmp").write_bytes(b"half")
    s3_store.write_once_bytes("raw/intent/dt=2026-09-14/.part-00002.csv.tmp", b"half")

    on_disk = snapshot_raw(local, "intent", START, END)
    on_s3 = snapshot_raw(s3_store, "intent", START, END)
    assert on_s3 == on_disk  # same keys, hashes, sizes, row counts, hence the same manifest_sha256
    assert [(f["key"], f["rows"], f["in_interval"]) for f in on_s3["files"]] == [
        ("raw/intent/dt=2026-09-07/part-00000.csv", 1, False),
        ("raw/intent/dt=2026-09-14/part-00000.csv", 2, True),
        ("raw/intent/dt=2026-09-14/part-00001.csv", 1, True),
    ]
    # The objects really are in the dataset bucket, where the jobs' requests look for them.
    listed = simulator_s3.list_objects_v2(Bucket=simulator_buckets["dataset"], Prefix="raw/intent/")
    assert len(listed["Contents"]) == len(RAW) + 1
    verify_raw_files(s3_store, on_s3)


def test_a_changed_or_missing_object_fails_verification_naming_its_uri(
    s3_store, simulator_s3, simulator_buckets, tmp_path
):
    land_everywhere(LocalStore(tmp_path / "store"), s3_store)
    manifest = snapshot_raw(s3_store, "intent", START, END)
    key = "raw/intent/dt=2026-09-14/part-00001.csv"
    uri = s3_store.uri(key)
    simulator_s3.put_object(Bucket=simulator_buckets["dataset"], Key=key, Body=b"text,category\nchanged,x\n")
    with pytest.raises(RawDataError, match=rf"{uri}: changed since snapshot_raw"):
        verify_raw_files(s3_store, manifest)
    simulator_s3.delete_object(Bucket=simulator_buckets["dataset"], Key=key)
    with pytest.raises(RawDataError, match=rf"{uri}: listed in the raw manifest but missing"):
        verify_raw_files(s3_store, manifest)


def test_bad_raw_input_on_s3_is_named_by_its_uri(s3_store):
    bad = "raw/intent/dt=2026-09-14/part-00000.csv"
    s3_store.write_once_bytes(bad, b"text,category\n\xff\xfe,card_arrival\n")
    with pytest.raises(
        RawDataError, match=rf"{s3_store.uri(bad)}: line 2 \(byte offset 14\): b'\\xff' is not valid UTF-8"
    ):
        snapshot_raw(s3_store, "intent", START, END)
    with pytest.raises(RawDataError, match=rf"{s3_store.uri('raw/other')}: no raw partitions before 2026-09-21"):
        snapshot_raw(s3_store, "other", START, END)


class _CountingStore:
    """An S3Store that counts the objects it downloads (``read_bytes``); everything else passes through."""

    def __init__(self, store) -> None:
        self._store, self.downloads = store, []

    def read_bytes(self, key: str) -> bytes:
        self.downloads.append(key)
        return self._store.read_bytes(key)

    def __getattr__(self, name: str):
        return getattr(self._store, name)


def test_a_later_snapshot_reads_no_file_whose_checksum_s3_keeps(s3_store, simulator_s3, simulator_buckets):
    """The raw history only grows: each run used to download and hash all of it. Files written with S3's SHA-256
    (every write of the store) are read once; their checked facts are kept by content, and the next snapshot takes
    them with one HEAD each. A file an uploader wrote without a checksum is still read and hashed."""
    for key, body in RAW.items():
        s3_store.write_once_bytes(key, body)
    no_checksum = "raw/intent/dt=2026-09-07/part-00001.csv"
    simulator_s3.put_object(Bucket=simulator_buckets["dataset"], Key=no_checksum, Body=b"text,category\nhi,greet\n")
    first = _CountingStore(s3_store)
    manifest = snapshot_raw(first, "intent", START, END)
    second = _CountingStore(s3_store)
    again = snapshot_raw(second, "intent", START, END)
    assert again == manifest and manifest["total_rows"] == 5
    assert sorted(first.downloads) == sorted([*list(RAW)[:3], no_checksum])
    assert second.downloads == [no_checksum]


def test_a_stored_checksum_that_disagrees_with_the_content_is_refused(s3_store):
    key = "raw/intent/dt=2026-09-07/part-00000.csv"
    s3_store.write_once_bytes(key, RAW[key])

    class _Lying(_CountingStore):
        def stored_sha256(self, key: str) -> str:
            return "0" * 64

    with pytest.raises(RawDataError, match=r"part-00000.csv: its content hashes to [0-9a-f]{64}, but the store's"):
        snapshot_raw(_Lying(s3_store), "intent", START, END)
