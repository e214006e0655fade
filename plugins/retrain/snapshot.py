"""snapshot_raw: freeze the raw partitions a run sees into a manifest.

A run sees every partition ``raw/<model>/dt=YYYY-MM-DD/`` with ``dt`` before the end
of its data interval (the dataset grows over time); partitions inside the interval
are flagged ``in_interval``. A backfill of an old interval therefore sees exactly the
data that run saw. The manifest records each file's sha256 and row count so later
steps can prove they read the same bytes.
"""

from __future__ import annotations

import csv
import hashlib
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

from retrain.store import LocalStore, canonical_json, sha256_file

PARTITION = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")


class RawDataError(ValueError):
    """Raw input breaks a rule; the message names the file, the row and the rule."""


def count_csv_rows(path: Path) -> int:
    """Data rows of a CSV file (header excluded), honouring quoted newlines; a leading UTF-8 BOM (Excel) is dropped."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        if next(reader, None) is None:
            return 0
        return sum(1 for _ in reader)


def list_partitions(store: LocalStore, model: str) -> list[tuple[date, Path]]:
    """All raw partitions of a model, oldest first."""
    base = store.path(f"raw/{model}")
    found = []
    for child in sorted(base.iterdir()) if base.is_dir() else []:
        match = PARTITION.match(child.name)
        if child.is_dir() and match:
            found.append((date.fromisoformat(match.group(1)), child))
    return found


def snapshot_raw(store: LocalStore, model: str, interval_start: datetime, interval_end: datetime) -> dict[str, Any]:
    """Build the raw manifest for one data interval; raises RawDataError on empty input."""
    start, end = interval_start.date(), interval_end.date()
    files: list[dict[str, Any]] = []
    for day, directory in list_partitions(store, model):
        if day >= end:
            continue
        parts = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
        if not parts:
            raise RawDataError(f"{directory}: empty partition (no files); rule: every partition holds at least one data file")
        for part in parts:
            try:
                rows = count_csv_rows(part)
            except UnicodeDecodeError as exc:
                raise RawDataError(f"{part}: byte {exc.start}: not valid UTF-8; rule: raw files are UTF-8 CSV") from None
            except csv.Error as exc:
                raise RawDataError(f"{part}: {exc}; rule: raw files are well-formed CSV") from None
            if rows == 0:
                raise RawDataError(f"{part}: row 1: empty partition file (no data rows); rule: every partition file holds at least one row")
            files.append(
                {
                    "key": part.relative_to(store.root).as_posix(),
                    "dt": day.isoformat(),
                    "in_interval": start <= day < end,
                    "rows": rows,
                    "bytes": part.stat().st_size,
                    "sha256": sha256_file(part),
                }
            )
    if not files:
        raise RawDataError(
            f"{store.path(f'raw/{model}')}: no raw partitions before {end.isoformat()}; rule: a run needs at least one partition"
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


def verify_raw_files(store: LocalStore, manifest: dict[str, Any]) -> None:
    """Re-hash every file in a raw manifest; raises RawDataError if one changed since the snapshot."""
    for entry in manifest["files"]:
        path = store.path(entry["key"])
        if not path.is_file():
            raise RawDataError(f"{path}: listed in the raw manifest but missing")
        if sha256_file(path) != entry["sha256"]:
            raise RawDataError(f"{path}: changed since snapshot_raw (sha256 differs); rule: raw partitions are immutable")
