"""snapshot_raw: which partitions a run sees, and the errors raw input gets."""

from __future__ import annotations

import codecs
from datetime import UTC, datetime

import pytest

from retrain.snapshot import RawDataError, count_csv_rows, snapshot_raw, verify_raw_files

START, END = datetime(2026, 9, 14, tzinfo=UTC), datetime(2026, 9, 21, tzinfo=UTC)


def land(store, day, body="text,category\nhello there,card_arrival\n", name="part-00000.csv"):
    path = store.path(f"raw/intent/dt={day}/{name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body.encode() if isinstance(body, str) else body)
    return path


def test_sees_history_up_to_interval_end_and_flags_the_interval(store):
    land(store, "2026-09-07")
    land(store, "2026-09-14", 'text,category\na,b\n"multi\nline",c\n')
    land(store, "2026-09-21")  # the interval end is exclusive
    manifest = snapshot_raw(store, "intent", START, END)
    assert manifest["partitions"] == ["2026-09-07", "2026-09-14"]
    assert [f["in_interval"] for f in manifest["files"]] == [False, True]
    assert manifest["total_rows"] == 3 and manifest["interval_rows"] == 2
    assert len(manifest["manifest_sha256"]) == 64
    assert snapshot_raw(store, "intent", START, END) == manifest  # deterministic


def test_empty_partition_file_is_named(store):
    land(store, "2026-09-07")
    empty = land(store, "2026-09-14", "text,category\n")
    with pytest.raises(
        RawDataError,
        match=rf"{empty}: row 1: empty partition file .* rule: every partition file holds at least one row",
    ):
        snapshot_raw(store, "intent", START, END)


def test_empty_partition_directory_is_named(store):
    store.path("raw/intent/dt=2026-09-14").mkdir(parents=True)
    with pytest.raises(RawDataError, match=r"dt=2026-09-14: empty partition \(no files\)"):
        snapshot_raw(store, "intent", START, END)


def test_no_partitions_at_all(store):
    with pytest.raises(RawDataError, match="no raw partitions before 2026-09-21"):
        snapshot_raw(store, "intent", START, END)


def test_utf8_bom_is_accepted_and_not_counted(store):
    """Excel starts a CSV with a byte-order mark; it is not data, so the file counts as it would without it."""
    body = 'text,category\nhello there,card_arrival\n"multi\nline",c\n'
    land(store, "2026-09-07", body)
    bom = land(store, "2026-09-14", codecs.BOM_UTF8 + body.encode())
    manifest = snapshot_raw(store, "intent", START, END)
    assert [f["rows"] for f in manifest["files"]] == [2, 2]
    assert count_csv_rows(bom) == 2
    assert count_csv_rows(land(store, "2026-09-14", codecs.BOM_UTF8 + b"text,category\n", name="part-00001.csv")) == 0


def test_non_utf8_file_is_named(store):
    bad = land(store, "2026-09-14", b"text,category\n\xff\xfe,card_arrival\n")
    with pytest.raises(RawDataError, match=rf"{bad}: line 2 \(byte offset 14\): b'\\xff' is not valid UTF-8"):
        snapshot_raw(store, "intent", START, END)


def test_changed_file_after_snapshot_is_detected(store):
    path = land(store, "2026-09-14")
    manifest = snapshot_raw(store, "intent", START, END)
    verify_raw_files(store, manifest)
    path.write_text("text,category\nchanged,card_arrival\n")
    with pytest.raises(RawDataError, match="changed since snapshot_raw"):
        verify_raw_files(store, manifest)
