"""snapshot_raw: freeze the raw partitions a run sees into a manifest.

A run sees every partition ``raw/<model>/dt=YYYY-MM-DD/`` with ``dt`` before the end
of its data interval (the dataset grows over time); partitions inside the interval
are flagged ``in_interval``. A backfill of an old interval therefore sees exactly the
data that run saw. The manifest records each file's sha256 and row count so later
steps can prove they read the same bytes.

Everything here goes through the store's methods (``list_keys``, ``list_objects``,
``read_bytes``, ``uri``), so the same manifest comes out of a ``LocalStore`` directory and an
``S3Store`` bucket holding the same files; errors name the file by its path or ``s3://`` URI.

The raw history only grows, and a run must not download and hash all of it again (on MWAA this
runs in a worker that shares 2 GB among its task slots). A file whose store keeps its SHA-256
(S3, written with ``ChecksumAlgorithm=SHA256``) is read once: its checked row count is kept under
``runs/<model>/raw-facts/<sha256>.json``, keyed by content, and later snapshots take it from there
with one HEAD. Files without a stored checksum are read and hashed every time, as before.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

from retrain.store import Store, WriteOnceError, canonical_json

PARTITION = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")


class RawDataError(ValueError):
    """Raw input breaks a rule; the message names the file, the row and the rule."""


class NotUtf8Error(RawDataError):
    """A raw file holds a byte that is not UTF-8; carries the line and byte offset of the first one."""

    def __init__(self, path: Path | str, line: int, offset: int, detail: str) -> None:
        super().__init__(f"{path}: line {line} (byte offset {offset}): {detail}; rule: raw files are UTF-8 CSV")
        self.line, self.offset, self.detail = line, offset, detail


def decode_utf8_bytes(data: bytes, name: Path | str) -> str:
    """A raw file's text from its bytes, a leading UTF-8 BOM (Excel) dropped; ``name`` is what errors show."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise NotUtf8Error(
            name, line, exc.start, f"{data[exc.start : exc.end]!r} is not valid UTF-8 ({exc.reason})"
        ) from None


def decode_utf8(path: Path) -> str:
    """A raw file's text, a leading UTF-8 BOM (Excel) dropped; a byte that is not UTF-8 raises NotUtf8Error."""
    return decode_utf8_bytes(
        path.read_bytes(), path
    )  # whole file: a streamed decoder reports offsets within its buffer


def header_problems(header: list[str], text_column: str, label_column: str) -> list[str]:
    """Why a raw CSV header breaks the rule "exactly the configured text and label columns, each once" (empty: it
    doesn't)."""
    required = (text_column, label_column)
    problems = [f"header has required column '{c}'" for c in required if c not in header]
    problems += [
        f"header names column '{c}' once (it appears {header.count(c)} times)"
        for c in dict.fromkeys(header)
        if header.count(c) > 1
    ]
    extra = [c for c in dict.fromkeys(header) if c not in required]
    if extra:
        problems.append(
            f"header has only the configured columns '{text_column}' and '{label_column}' (unexpected: {extra})"
        )
    return problems


def count_csv_text_rows(text: str) -> int:
    """Data rows of CSV text (header excluded), honouring quoted newlines."""
    reader = csv.reader(io.StringIO(text, newline=""))
    if next(reader, None) is None:
        return 0
    return sum(1 for _ in reader)


def count_csv_rows(path: Path) -> int:
    """Data rows of a CSV file (header excluded), honouring quoted newlines; a leading UTF-8 BOM (Excel) is dropped."""
    return count_csv_text_rows(decode_utf8(path))


def list_partitions(store: Store, model: str) -> list[tuple[date, str]]:
    """All raw partitions of a model as (day, store key), oldest first."""
    base = f"raw/{model}"
    files = set(store.list_objects(base))  # a file named like a partition is not one: partitions are prefixes
    found = []
    for key in store.list_keys(base):
        match = PARTITION.match(key.rpartition("/")[2])
        if match and key not in files:
            found.append((date.fromisoformat(match.group(1)), key))
    return found


def snapshot_raw(store: Store, model: str, interval_start: datetime, interval_end: datetime) -> dict[str, Any]:
    """Build the raw manifest for one data interval; raises RawDataError on empty input."""
    start, end = interval_start.date(), interval_end.date()
    files: list[dict[str, Any]] = []
    for day, partition in list_partitions(store, model):
        if day >= end:
            continue
        parts = store.list_objects(partition)
        if not parts:
            raise RawDataError(
                f"{store.uri(partition)}: empty partition (no files); rule: every partition holds at least one data "
                "file"
            )
        for key in parts:
            where = {"key": key, "dt": day.isoformat(), "in_interval": start <= day < end}
            files.append({**where, **file_facts(store, model, key)})
    if not files:
        raise RawDataError(
            f"{store.uri(f'raw/{model}')}: no raw partitions before {end.isoformat()}; rule: a run needs at least one "
            "partition"
        )
    manifest = {
        "model": model,
        "data_interval_start": interval_start.isoformat(),
        "data_interval_end": interval_end.isoformat(),
        "files": files,
        "total_rows": sum(f["rows"] for f in files),
        "interval_rows": sum(f["rows"] for f in files if f["in_interval"]),
        "partitions": sorted({f["dt"] for f in files}),
    }
    manifest["manifest_sha256"] = hashlib.sha256(canonical_json(manifest)).hexdigest()
    return manifest


def facts_key(model: str, sha256: str) -> str:
    return f"runs/{model}/raw-facts/{sha256}.json"


def read_file_facts(store: Store, key: str) -> dict[str, Any]:
    """Row count, size and sha256 of one raw file, read and checked in full."""
    name = store.uri(key)
    data = store.read_bytes(key)  # one read serves the row count, the size and the hash
    try:
        rows = count_csv_text_rows(decode_utf8_bytes(data, name))
    except csv.Error as exc:
        raise RawDataError(f"{name}: {exc}; rule: raw files are well-formed CSV") from None
    if rows == 0:
        raise RawDataError(
            f"{name}: row 1: empty partition file (no data rows); rule: every partition file holds at least one row"
        )
    return {"rows": rows, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def file_facts(store: Store, model: str, key: str) -> dict[str, Any]:
    """``read_file_facts``, taken from the facts kept for the file's content when its store keeps its SHA-256."""
    stored = store.stored_sha256(key)
    if stored is None:
        return read_file_facts(store, key)
    try:
        return store.read_json(facts_key(model, stored))
    except FileNotFoundError:
        pass
    facts = read_file_facts(store, key)
    if facts["sha256"] != stored:
        raise RawDataError(
            f"{store.uri(key)}: its content hashes to {facts['sha256']}, but the store's checksum says {stored}; "
            "rule: raw files are read back intact"
        )
    with contextlib.suppress(WriteOnceError):  # another run kept them first: facts of the same content
        store.write_once_bytes(facts_key(model, stored), canonical_json(facts))
    return facts


def verify_raw_files(store: Store, manifest: dict[str, Any]) -> None:
    """Re-hash every file in a raw manifest; raises RawDataError if one changed since the snapshot."""
    for entry in manifest["files"]:
        try:
            data = store.read_bytes(entry["key"])
        except (FileNotFoundError, IsADirectoryError):
            raise RawDataError(f"{store.uri(entry['key'])}: listed in the raw manifest but missing") from None
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise RawDataError(
                f"{store.uri(entry['key'])}: changed since snapshot_raw (sha256 differs); rule: raw partitions are "
                "immutable"
            )
