"""Land a model's sample data: raw partitions over recent data intervals, and its golden version.

    python -m retrain_tools.seed --model intent        # or: make seed MODEL=intent

What to land comes from the model's config (``sample_data``: the raw CSV, the golden CSV,
how many partitions). One placement rule serves seeding, the demo, the benchmarks and the
tests: the raw rows are spread, by a hash of the text, over the ``partitions`` consecutive
data intervals of the model's cadence that end with the latest complete interval, written
as ``raw/<model>/dt=<interval start>/part-00000.csv``. Once a model has raw partitions, a
re-seed keeps their placement (it ends where the existing partitions end), so seeding again
next week is still a no-op.

Nothing that exists is changed: every target is checked before anything is written, and a
partition or golden version that exists with other content is refused by name. Seeding the
same content again writes nothing. The golden version's full content hash is printed, and
``bin/retrain golden pin <model>`` writes it into the config.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import sys
from datetime import UTC, date, datetime
from pathlib import Path

from retrain.config import ConfigError, ModelConfig, load_model
from retrain.golden import SeedError, classification_golden, golden_rows, normalized_key, read_rows  # noqa: F401  (re-exported)
from retrain.intervals import intervals_ending, is_boundary, latest_complete_interval, shift
from retrain.paths import PROJECT_ROOT, config_dir
from retrain.snapshot import list_partitions
from retrain.store import Store, WriteOnceError, digest_sources, get_store
from retrain.tasks import task_module


def partition_of(text: str, partitions: int) -> int:
    """Which of the partitions a row lands in: a hash of its text, so placement never depends on row order."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % partitions


def placement(
    store: Store, config: ModelConfig, partitions: int, end: datetime | None, now: datetime
) -> list[tuple[datetime, datetime]]:
    """The intervals to seed: ending at ``end``, else where existing partitions end, else at the latest complete
    interval."""
    cadence = config.schedule.calendar
    if end is None:
        existing = list_partitions(store, config.name)
        if existing:
            last = datetime.combine(existing[-1][0], datetime.min.time(), tzinfo=UTC)
            end = shift(cadence, last, 1)
        else:
            end = latest_complete_interval(cadence, now)[1]
    return intervals_ending(cadence, end, partitions)


def plan_raw(
    config: ModelConfig, rows: list[tuple[str, str]], intervals: list[tuple[datetime, datetime]]
) -> dict[str, bytes]:
    """Store key -> CSV bytes of every raw partition to land."""
    plan = {}
    for index, (start, _end) in enumerate(intervals):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([config.data.text_column, config.data.label_column])
        writer.writerows(row for row in rows if partition_of(row[0], len(intervals)) == index)
        plan[f"raw/{config.name}/dt={start.date().isoformat()}/part-00000.csv"] = buffer.getvalue().encode()
    return plan


def seed_raw(store: Store, plan: dict[str, bytes]) -> list[str]:
    """Write the planned partitions that are missing; refuse, writing nothing, if one exists with other content."""
    conflicts = [key for key, data in plan.items() if store.exists(key) and store.read_bytes(key) != data]
    if conflicts:
        raise WriteOnceError(
            f"{store.uri(conflicts[0])}: exists with different content ({len(conflicts)} conflicting partition(s)); "
            "rule: raw partitions are immutable. Nothing was written. Seed over other intervals with --end, "
            "or start from an empty store (make clean-state)."
        )
    written = []
    for key, data in plan.items():
        if not store.exists(key):
            store.write_once_bytes(key, data)
            written.append(key)
    return written


def publish_golden(store: Store, config: ModelConfig, source: Path, version: str) -> tuple[dict, bool]:
    """Publish an immutable golden version from a CSV, on any store; returns (manifest, written).

    An existing version with the same content is verified and left alone; one with other
    content is refused by name."""
    key = f"golden/{config.name}/{version}"
    files, rows = task_module("gate", config.task).golden_files(config, source)
    if store.exists(key):
        existing = store.verify_version(key)
        if existing["content_sha256"] != digest_sources(files)[0]:
            raise WriteOnceError(
                f"{store.uri(key)}: golden {version} exists with different content; rule: golden versions are "
                "immutable. Nothing was written."
            )
        return existing, False
    origin = source.relative_to(PROJECT_ROOT).as_posix() if source.is_relative_to(PROJECT_ROOT) else str(source)
    manifest = store.publish_version(
        key, files, {"golden_version": version, "model": config.name, "source": origin, "rows": rows}
    )
    return manifest, True


def seed(
    store: Store,
    config: ModelConfig,
    partitions: int | None = None,
    end: datetime | None = None,
    now: datetime | None = None,
) -> dict:
    """Land the model's sample data; returns what was planned and written."""
    if config.sample_data is None:
        raise SeedError(
            f"{config_dir() / (config.name + '.yaml')}: no field 'sample_data'; rule: seeding needs sample_data.raw "
            "and sample_data.golden"
        )
    sample = config.sample_data
    for which in ("raw", "golden"):
        if not sample.path(which).is_file():
            raise SeedError(
                f"{config_dir() / (config.name + '.yaml')}: field 'sample_data.{which}': no such file "
                f"{sample.path(which)}"
            )
    intervals = placement(store, config, partitions or sample.partitions, end, now or datetime.now(UTC))
    rows = read_rows(sample.path("raw"), config.data.text_column, config.data.label_column)
    plan = plan_raw(config, rows, intervals)
    # Check the golden version before writing any partition, so a refusal leaves nothing behind.
    golden, golden_written = publish_golden(store, config, sample.path("golden"), config.data.golden_version)
    written = seed_raw(store, plan)
    return {
        "intervals": intervals,
        "raw_written": written,
        "raw_planned": list(plan),
        "golden": golden,
        "golden_written": golden_written,
    }


def describe(config: ModelConfig, store: Store, result: dict) -> str:
    """What seeding did, with the full golden hash and whether the config pins it."""
    intervals, golden = result["intervals"], result["golden"]
    first, last = intervals[0][0].date(), intervals[-1][0].date()
    raw_state = (
        f"{len(result['raw_written'])} written" if result["raw_written"] else "all present already, nothing written"
    )
    pin = config.data.golden_sha256
    pin_state = (
        "pinned in the config"
        if pin == golden["content_sha256"]
        else f"NOT pinned: run `bin/retrain golden pin {config.name}`"
        if pin is None
        else f"DIFFERS from the config's pin {pin}: evaluation will refuse this golden set"
    )
    return "\n".join(
        [
            f"raw: {len(intervals)} {config.schedule.cadence} partitions dt={first}..{last} under "
            f"{store.uri(f'raw/{config.name}')} ({raw_state})",
            f"golden {config.data.golden_version}: {golden['rows']} rows "
            f"({'published' if result['golden_written'] else 'present already, verified'})",
            f"golden content sha256 {golden['content_sha256']} ({pin_state})",
        ]
    )


def parse_end(value: str) -> datetime:
    return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m retrain_tools.seed", description="Land a model's sample raw partitions and golden set."
    )
    parser.add_argument("model_positional", nargs="?", metavar="MODEL", help="model name (or use --model)")
    parser.add_argument("--model", help="model name, e.g. intent (its config names the sample data)")
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="data intervals to spread the raw rows over (default: the config's sample_data.partitions)",
    )
    parser.add_argument(
        "--end",
        type=parse_end,
        default=None,
        help="end of the last seeded interval, an interval boundary (default: where existing partitions end, else the "
        "latest complete interval)",
    )
    args = parser.parse_args(argv)
    name = args.model or args.model_positional
    if not name:
        parser.error("a model is required: --model NAME")
    try:
        config = load_model(name)
        if args.end is not None and not is_boundary(config.schedule.calendar, args.end.date()):
            on = f" ({config.schedule.weekday} 00:00 UTC)" if config.schedule.cadence == "weekly" else ""
            parser.error(f"--end {args.end.date()} is not a {config.schedule.cadence} interval boundary{on}")
        store = get_store()  # the backend's: a LocalStore, or the S3 buckets with RETRAIN_BACKEND=aws
        result = seed(store, config, args.partitions, args.end)
    except (ConfigError, SeedError, WriteOnceError) as exc:
        print(f"seed refused: {exc}", file=sys.stderr)
        return 1
    print(describe(config, store, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
