"""validate_raw: check a raw snapshot against the model's Great Expectations suite.

A processing job (SageMaker processing on AWS, the local runner on a laptop); it knows
nothing about Airflow. Run it with the job environment, from the project root:

    PYTHONPATH=include:plugins .venv-jobs/bin/python include/validation/validate_raw.py \
        --raw-manifest .retrain/runs/intent/<run>/snapshot_raw/raw_manifest.json \
        --store-root .retrain --text-column text --label-column category \
        --labels-file data/banking77/categories.json \
        --min-rows 20 --min-text-chars 2 --max-text-chars 512 \
        --output-dir .retrain/runs/intent/<run>/validate_raw

Stages, each stopping the job when it finds a problem:
1. every file still matches the sha256 that snapshot_raw recorded;
2. structure: each CSV is read strictly with the csv module (header, field counts,
   quoting); problems are collected over all files before stopping;
3. content: one GX validation run over all rows, with source_file/source_line as
   unexpected-index columns so every failing value maps back to its file and line;
4. per partition of the run's own interval (``--max-label-share``, ``--max-duplicate-rate``,
   ``--max-label-shift`` against the previous dataset version): refusals name the partition and
   the figure; a rule listed in ``--warn`` prints a warning instead.

Writes <output-dir>/validation_report.json, validation_report.md and result.json
(in every outcome). Exit 0 when valid; otherwise prints the problems, then as the last
line "validation failed: N problem(s); report: <path>", and exits 1.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from retrain.snapshot import NotUtf8Error, RawDataError, header_problems, verify_raw_files
from retrain.snapshot import decode_utf8 as read_utf8
from retrain.store import LocalStore

MAX_FAILURES_IN_RESULT = 50
MAX_FAILURES_PRINTED = 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--raw-manifest", type=Path, required=True)
    parser.add_argument("--store-root", type=Path, required=True)
    parser.add_argument("--text-column", required=True)
    parser.add_argument("--label-column", required=True)
    parser.add_argument("--labels-file", type=Path, required=True, help="JSON list of allowed labels")
    parser.add_argument("--min-rows", type=int, required=True)
    parser.add_argument("--min-text-chars", type=int, required=True)
    parser.add_argument("--max-text-chars", type=int, required=True)
    parser.add_argument("--max-label-share", type=float, default=1.0, help="per partition of the run's interval")
    parser.add_argument("--max-duplicate-rate", type=float, default=1.0, help="per partition: rows repeating a row")
    parser.add_argument("--max-label-shift", type=float, default=1.0, help="per label, vs the previous dataset version")
    parser.add_argument("--min-partition-rows", type=int, default=1, help="smaller partitions skip the share rules")
    parser.add_argument("--warn", default="", help="comma-separated rules that warn instead of refusing")
    parser.add_argument("--output-dir", type=Path, default=Path("/opt/ml/processing/output/validation"))
    return parser.parse_args(argv)


def failure(file: str, line: int | None, rule: str, value: Any = None) -> dict[str, Any]:
    # Long texts are cut so one bad row cannot flood the log or result.json.
    if isinstance(value, str) and len(value) > 80:
        value = f"{value[:60]}… ({len(value)} chars)"
    return {"file": file, "line": line, "rule": rule, "value": value}


def describe(f: dict[str, Any]) -> str:
    """One failure as "<file>: line <n>: <rule> (value: ...)"; line 1 is always the header."""
    if f["line"] is None and f["value"] is None:  # job-level problem: the rule says it all
        return f"{f['file']}: {f['rule']}"
    where = {None: "", 1: " row 1 (header):"}.get(f["line"], f" line {f['line']}:")
    return f"{f['file']}:{where} {f['rule']} (value: {f['value']!r})"


def decode_utf8(path: Path, key: str) -> tuple[str | None, list[dict]]:
    """The file's text without a leading BOM (Excel writes one), or a problem on the line of the first byte that is not
    UTF-8."""
    try:
        return read_utf8(path), []
    except NotUtf8Error as exc:
        return None, [failure(key, exc.line, "file is UTF-8 text", f"byte offset {exc.offset}: {exc.detail}")]


def read_csv_strict(path: Path, key: str, text_col: str, label_col: str) -> tuple[list[tuple], list[dict]]:
    """Records (text, label, key, line) of one file, and its structural problems.

    Line numbers are those of the record's first physical line, so a quoted newline
    inside a text does not shift the lines reported for later records.
    """
    text, problems = decode_utf8(path, key)
    records: list[tuple] = []
    if text is None:
        return records, problems
    # newline="" keeps line endings for the csv module, as open(..., newline="") would;
    # strict=True turns sloppy quoting (e.g. `"abc"def`) into an error instead of a guess.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = next(reader, [])
    broken = header_problems(header, text_col, label_col)  # the same header rule as the ETL's
    for rule in broken:
        problems.append(failure(key, 1, rule, header))
    if broken:
        return records, problems
    text_at, label_at = header.index(text_col), header.index(label_col)
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(failure(key, start, "malformed CSV record: well-formed quoting", str(exc)))
        else:
            if len(row) != len(header):
                rule = f"malformed CSV record: {len(header)} fields, as in the header"
                problems.append(failure(key, start, rule, f"{len(row)} fields: {row}"))
            else:
                # An empty field is a missing value, so the not-null rule reports it.
                records.append((row[text_at] or None, row[label_at] or None, key, start))
        start = reader.line_num + 1
    return records, problems


def build_suite(args: argparse.Namespace, labels: list[str], stripped: str):
    """The suite; each expectation carries its human rule in meta so reports can quote it."""
    import great_expectations as gx

    text, label = args.text_column, args.label_column
    E = gx.expectations
    rules = [
        E.ExpectColumnToExist(column=text, meta={"rule": f"column '{text}' exists"}),
        E.ExpectColumnToExist(column=label, meta={"rule": f"column '{label}' exists"}),
        E.ExpectColumnValuesToNotBeNull(column=text, meta={"rule": f"{text} is present (not null/empty)"}),
        E.ExpectColumnValuesToNotBeNull(column=label, meta={"rule": f"{label} is present (not null/empty)"}),
        E.ExpectColumnValueLengthsToBeBetween(
            column=stripped,
            min_value=args.min_text_chars,
            meta={"rule": f"{text} non-empty after strip (at least {args.min_text_chars} chars)"},
        ),
        E.ExpectColumnValueLengthsToBeBetween(
            column=text, max_value=args.max_text_chars, meta={"rule": f"{text} at most {args.max_text_chars} chars"}
        ),
        E.ExpectColumnValuesToBeInSet(
            column=label, value_set=labels, meta={"rule": f"{label} in the allowed labels ({args.labels_file.name})"}
        ),
        E.ExpectTableRowCountToBeBetween(min_value=args.min_rows, meta={"rule": f"at least {args.min_rows} rows"}),
    ]
    return gx.ExpectationSuite(name="validate_raw", expectations=rules)


def run_gx(records: list[tuple], args: argparse.Namespace, labels: list[str]) -> dict[str, Any]:
    """One GX validation over all rows; returns the result as JSON-ready dict."""
    import great_expectations as gx
    import pandas as pd
    from great_expectations.data_context.types.base import ProgressBarsConfig

    text = args.text_column
    stripped = f"{text}__stripped"  # helper column: the min-length rule applies to stripped text
    frame = pd.DataFrame(records, columns=[text, args.label_column, "source_file", "source_line"])
    frame[stripped] = frame[text].str.strip()

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # keep the task log readable
    batch = (
        context.data_sources.add_pandas("raw").add_dataframe_asset("rows").add_batch_definition_whole_dataframe("all")
    )
    suite = context.suites.add(build_suite(args, labels, stripped))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="validate_raw", data=batch, suite=suite)
    )
    result = definition.run(
        batch_parameters={"dataframe": frame},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["source_file", "source_line"]},
    )
    return result.to_json_dict()


def gx_failures(gx_result: dict[str, Any], manifest_name: str) -> list[dict[str, Any]]:
    """Per-row failures (file + line) from the GX result; table-level ones name the manifest."""
    found = []
    for item in gx_result["results"]:
        if item["success"]:
            continue
        config, details = item["expectation_config"], item["result"]
        rule = config.get("meta", {}).get("rule", config["type"])
        if item.get("exception_info", {}).get("raised_exception"):
            found.append(failure(manifest_name, None, rule, item["exception_info"]["exception_message"]))
        elif "unexpected_index_list" in details:
            column = config["kwargs"]["column"]
            for row in details["unexpected_index_list"]:
                found.append(failure(row["source_file"], int(row["source_line"]), rule, row.get(column)))
        else:
            found.append(failure(manifest_name, None, rule, details.get("observed_value")))
    return sorted(found, key=lambda f: (f["line"] is None, f["file"], f["line"] or 0))


def in_interval_partitions(records: list[tuple], manifest: dict[str, Any]) -> dict[str, list[tuple]]:
    """The rows (text, label) of each partition of the run's own interval, by partition directory: the data this run
    adds. Older partitions were judged by the run of their own interval."""
    where = {f["key"]: f["key"].rsplit("/", 1)[0] for f in manifest["files"] if f.get("in_interval")}
    partitions: dict[str, list[tuple]] = {}
    for text, label, key, _ in records:
        if key in where:
            partitions.setdefault(where[key], []).append((text, label))
    return partitions


def label_share(partition: str, rows: list[tuple], limit: float) -> dict[str, Any] | None:
    """One label holding more than ``limit`` of the partition's rows."""
    label, n = Counter(label for _, label in rows).most_common(1)[0]
    if n / len(rows) <= limit:
        return None
    rule = f"label_share: one label at most {limit:.0%} of a partition's rows"
    return failure(partition, None, rule, f"{label}: {n} of {len(rows)} rows ({n / len(rows):.1%})")


def duplicate_rate(partition: str, rows: list[tuple], limit: float) -> dict[str, Any] | None:
    """More than ``limit`` of the partition's rows repeating an earlier row exactly (the ETL would drop them
    silently)."""
    repeats = len(rows) - len(set(rows))
    if repeats / len(rows) <= limit:
        return None
    top, n = Counter(rows).most_common(1)[0]
    rule = f"duplicate_rate: at most {limit:.0%} of a partition's rows repeat another row"
    figure = f"{repeats} of {len(rows)} rows ({repeats / len(rows):.1%}); most repeated ({n}x): {top[0][:60]!r}"
    return failure(partition, None, rule, figure)


def label_shift(partition: str, rows: list[tuple], previous: dict[str, Any] | None, limit: float):
    """The label whose share moved most between the partition and the previous dataset version, past ``limit``."""
    if previous is None:
        return None
    before: Counter = Counter()
    for split in previous["label_distribution"].values():
        before.update(split)
    now, total_before = Counter(label for _, label in rows), sum(before.values()) or 1
    moved = {label: now[label] / len(rows) - before[label] / total_before for label in set(now) | set(before)}
    label = max(sorted(moved), key=lambda name: abs(moved[name]))
    if abs(moved[label]) <= limit:
        return None
    version = previous["dataset_version"]
    rule = f"label_shift: no label's share moves more than {limit:.0%} from dataset version {version}"
    shares = f"{before[label] / total_before:.1%} -> {now[label] / len(rows):.1%}"
    figure = f"{label}: {shares} ({now[label]} of {len(rows)} rows)"
    return failure(partition, None, rule, figure)


def previous_version(store: LocalStore, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The dataset version this run's data follows, by build_dataset's own rule (the newest one built for an earlier
    interval); None before the first, or where the store holds no dataset versions (a processing container)."""
    from etl.build_dataset import find_previous

    return find_previous(store, manifest["model"], "", manifest.get("data_interval_end"))


def partition_findings(records, manifest, store, args) -> tuple[list[dict], list[dict]]:
    """(refusals, warnings) of the per-partition rules; a rule named in --warn only warns."""
    previous = previous_version(store, manifest)
    warn, refusals, warnings = set(filter(None, args.warn.split(","))), [], []
    for partition, rows in sorted(in_interval_partitions(records, manifest).items()):
        found = {"duplicate_rate": duplicate_rate(partition, rows, args.max_duplicate_rate)}
        if len(rows) >= args.min_partition_rows:
            found["label_share"] = label_share(partition, rows, args.max_label_share)
            found["label_shift"] = label_shift(partition, rows, previous, args.max_label_shift)
        for rule, problem in found.items():
            if problem:
                (warnings if rule in warn else refusals).append(problem)
    return refusals, warnings


def expectation_name(item: dict[str, Any]) -> str:
    config = item["expectation_config"]
    column = config["kwargs"].get("column")
    return f"{config['type']}({column})" if column else config["type"]


def write_reports(out: Path, summary: dict[str, Any], gx_result: dict[str, Any] | None, failures: list[dict]) -> Path:
    """validation_report.json (full GX result + every failure), a short .md, and result.json."""
    out.mkdir(parents=True, exist_ok=True)
    report = out / "validation_report.json"
    report.write_text(
        json.dumps({**summary, "failures": failures, "gx_result": gx_result}, indent=2, default=str) + "\n"
    )
    lines = [
        f"# validate_raw: {'PASSED' if summary['success'] else 'FAILED'}",
        "",
        f"- raw manifest: `{summary['raw_manifest']}`",
        f"- rows: {summary['rows']}",
        f"- problems: {len(failures)}",
        "",
        "## Expectations",
        "",
    ]
    lines += [f"- {'ok  ' if ok else 'FAIL'} `{name}`" for name, ok in summary["expectations"].items()] or ["- not run"]
    if failures:
        lines += ["", f"## Problems (first {MAX_FAILURES_IN_RESULT})", ""]
        lines += [f"- {describe(f)}" for f in failures[:MAX_FAILURES_IN_RESULT]]
    (out / "validation_report.md").write_text("\n".join(lines) + "\n")
    result = {
        **summary,
        "report_path": str(report),
        "failures": failures[:MAX_FAILURES_IN_RESULT],
        "failure_count": len(failures),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return report


def validate(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any] | None, list[dict]]:
    """Run the three stages; stop at the first stage that finds problems."""
    manifest = json.loads(args.raw_manifest.read_text())
    store = LocalStore(args.store_root)
    summary: dict[str, Any] = {"success": False, "raw_manifest": str(args.raw_manifest), "rows": 0, "expectations": {}}
    try:
        verify_raw_files(store, manifest)
    except RawDataError as exc:
        return summary, None, [failure(args.raw_manifest.name, None, str(exc))]

    records, problems = [], []
    for entry in manifest["files"]:
        got, bad = read_csv_strict(store.path(entry["key"]), entry["key"], args.text_column, args.label_column)
        records += got
        problems += bad
    summary["rows"] = len(records)
    if problems:
        return summary, None, problems

    labels = [str(label) for label in json.loads(args.labels_file.read_text())]
    gx_result = run_gx(records, args, labels)
    summary["expectations"] = {expectation_name(item): item["success"] for item in gx_result["results"]}
    refusals, summary["warnings"] = partition_findings(records, manifest, store, args)
    summary["expectations"]["partition rules (label_share, duplicate_rate, label_shift)"] = not refusals
    summary["success"] = bool(gx_result["success"]) and not refusals
    return summary, gx_result, gx_failures(gx_result, args.raw_manifest.name) + refusals


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summary, gx_result, failures = validate(args)
    summary["success"] = summary["success"] and not failures
    report = write_reports(args.output_dir, summary, gx_result, failures)
    for warning in summary.get("warnings", []):
        print(f"warning: {describe(warning)}")
    if summary["success"]:
        print(
            f"validation passed: {summary['rows']} rows, {len(summary['expectations'])} expectations; report: {report}"
        )
        return 0
    for f in failures[:MAX_FAILURES_PRINTED]:
        print(describe(f))
    if len(failures) > MAX_FAILURES_PRINTED:
        print(f"… and {len(failures) - MAX_FAILURES_PRINTED} more in the report")
    print(f"validation failed: {len(failures)} problem(s); report: {report}")
    return os.EX_DATAERR  # bad data: the runner fails the task without retrying


if __name__ == "__main__":
    sys.exit(main())
