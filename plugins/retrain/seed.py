"""Land sample data: raw weekly partitions and an immutable golden version.

    python -m retrain.seed intent            # idempotent; refuses to change existing data

Training rows of ``data/banking77/train.csv`` are spread over consecutive weekly
partitions ``raw/intent/dt=<Monday>/part-00000.csv`` by a hash of the text, so every
week holds a stable, label-balanced slice and backfills have real work. The test split
becomes golden version ``v1``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from retrain.config import ModelConfig, load_model
from retrain.paths import PROJECT_ROOT
from retrain.store import LocalStore, WriteOnceError, verify_tree, write_manifest_and_publish

SAMPLE_SOURCES = {"intent": ("data/banking77/train.csv", "data/banking77/test.csv")}


def latest_complete_week(now: datetime) -> tuple[datetime, datetime]:
    """The Monday-to-Monday interval that ended most recently: what a weekly scheduler runs next."""
    end = datetime(now.year, now.month, now.day, tzinfo=timezone.utc) - timedelta(days=now.weekday())
    return end - timedelta(weeks=1), end


def normalized_key(text: str) -> str:
    """sha256 of lower-cased text without punctuation or repeated whitespace (the dedupe key)."""
    norm = re.sub(r"\s+", " ", re.sub(r"[^\w\s]", "", text.lower())).strip()
    return hashlib.sha256(norm.encode()).hexdigest()


def read_rows(path: Path, text_column: str, label_column: str) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [(row[text_column], row[label_column]) for row in csv.DictReader(handle)]


def week_of(text: str, weeks: int) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % weeks


def seed_raw(store: LocalStore, config: ModelConfig, source: Path, first_monday: date, weeks: int) -> list[Path]:
    """Write one CSV partition per week; an existing partition must hold identical bytes."""
    rows = read_rows(source, config.data.text_column, config.data.label_column)
    written = []
    for week in range(weeks):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([config.data.text_column, config.data.label_column])
        writer.writerows(row for row in rows if week_of(row[0], weeks) == week)
        key = f"raw/{config.name}/dt={(first_monday + timedelta(weeks=week)).isoformat()}/part-00000.csv"
        data = buffer.getvalue().encode()
        try:
            written.append(store.write_once_bytes(key, data))
        except WriteOnceError:
            if store.path(key).read_bytes() != data:
                raise WriteOnceError(f"{store.path(key)}: exists with different content; raw partitions are immutable") from None
    return written


def publish_golden(store: LocalStore, config: ModelConfig, source: Path, version: str) -> dict:
    """Publish an immutable golden version from a CSV; an existing version is verified, never rewritten."""
    key = f"golden/{config.name}/{version}"
    if store.exists(key):
        return verify_tree(store.path(key))
    labels = config.data.labels()
    label_id = {name: i for i, name in enumerate(labels)}
    staging = store.staging_dir(key)
    lines, seen = [], {}
    for line_no, (text, label) in enumerate(read_rows(source, config.data.text_column, config.data.label_column), start=2):
        if label not in label_id:
            raise ValueError(f"{source}: line {line_no}: label {label!r} is not one of the {len(labels)} allowed labels")
        # The key identifies the example (paired statistics join on it). Golden sets may hold
        # texts that normalise alike, so the occurrence number keeps keys unique.
        base = normalized_key(text)[:24]
        seen[base] = seen.get(base, -1) + 1
        lines.append({"key": f"{base}-{seen[base]}", "text": text, "label": label, "label_id": label_id[label]})
    lines.sort(key=lambda row: (row["key"], row["text"]))
    (staging / "golden.jsonl").write_text("".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in lines))
    return write_manifest_and_publish(
        store, staging, key,
        {"golden_version": version, "model": config.name, "source": source.relative_to(PROJECT_ROOT).as_posix() if source.is_relative_to(PROJECT_ROOT) else str(source), "rows": len(lines)},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retrain.seed", description="Land sample raw partitions and the golden set.")
    parser.add_argument("model", help="model name, e.g. intent")
    parser.add_argument("--weeks", type=int, default=6, help="weekly partitions to spread the training rows over (default 6)")
    parser.add_argument("--first-week", type=date.fromisoformat, default=None, help="Monday of the first partition (default: the config's start_date)")
    args = parser.parse_args(argv)
    if args.model not in SAMPLE_SOURCES:
        parser.error(f"no sample data for model {args.model!r}; known: {', '.join(SAMPLE_SOURCES)}")
    config, store = load_model(args.model), LocalStore()
    train_csv, test_csv = (PROJECT_ROOT / p for p in SAMPLE_SOURCES[args.model])
    first = args.first_week or config.schedule.start_date
    if first.weekday() != 0:
        parser.error(f"--first-week {first} is not a Monday")
    seed_raw(store, config, train_csv, first, args.weeks)
    golden = publish_golden(store, config, test_csv, config.data.golden_version)
    last = first + timedelta(weeks=args.weeks - 1)
    print(f"raw: {args.weeks} weekly partitions {first}..{last} under {store.path(f'raw/{config.name}')}")
    print(f"golden {config.data.golden_version}: {golden['rows']} rows, content sha256 {golden['content_sha256'][:16]}…")
    return 0


if __name__ == "__main__":
    sys.exit(main())
