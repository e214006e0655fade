"""validate_raw.py, run as the local runner runs it: a job-environment subprocess.

Each test builds a tiny raw store in tmp_path, snapshots it with the real
snapshot_raw, runs the script once (each run pays the GX import) and checks that
the message names the file, the line and the rule.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from retrain.config import load_model
from retrain.jobs import RunContext, validate_raw_spec
from retrain.paths import INCLUDE_DIR, PROJECT_ROOT, job_python
from retrain.runner import LocalJob, command_line, job_environment, local_job
from retrain.snapshot import snapshot_raw
from retrain.store import LocalStore

pytestmark = pytest.mark.skipif(not job_python().exists(), reason="job environment (.venv-jobs) not built")

SCRIPT = INCLUDE_DIR / "validation" / "validate_raw.py"
START = datetime(2026, 9, 7, tzinfo=UTC)
END = datetime(2026, 9, 14, tzinfo=UTC)
PART = "raw/intent/dt=2026-09-07/part-00000.csv"
LABELS = ["card_arrival", "card_linking", "exchange_rate"]
GOOD_ROWS = [
    "I am still waiting on my card?,card_arrival",
    "How do I link my new card?,card_linking",
    '"What is the rate today,\nfor euros?",exchange_rate',  # quoted comma and newline: one record, two lines
    "When will my card get here?,card_arrival",
]


def write_raw(root: Path, files: dict[str, str]) -> Path:
    """Write raw CSVs under ``root``, snapshot them, and return the manifest's path."""
    for key, content in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    manifest = snapshot_raw(LocalStore(root), "intent", START, END)
    manifest_path = root / "raw_manifest.json"
    manifest_path.write_text(json.dumps(manifest))
    return manifest_path


def csv_text(*rows: str, header: str = "text,category") -> str:
    return "\n".join([header, *rows]) + "\n"


def run_validate(
    tmp_path: Path,
    files: dict[str, str],
    min_rows: int = 3,
    columns: tuple[str, str] = ("text", "category"),
    labels: Path | None = None,
) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the script once with the runner's command line and environment; return it and result.json."""
    root = tmp_path / "store"
    if labels is None:
        labels = tmp_path / "labels.json"
        labels.write_text(json.dumps(LABELS))
    out = tmp_path / "out"
    spec = LocalJob(
        name="validate_raw",
        kind="processing",
        script=SCRIPT,
        arguments={
            "raw-manifest": str(write_raw(root, files)),
            "store-root": str(root),
            "text-column": columns[0],
            "label-column": columns[1],
            "labels-file": str(labels),
            "min-rows": str(min_rows),
            "min-text-chars": "2",
            "max-text-chars": "64",
            "output-dir": str(out),
        },
        output_dir=out,
        result_file=out / "result.json",
    )
    proc = subprocess.run(command_line(spec), env=job_environment(spec), capture_output=True, text=True, timeout=300)
    assert (out / "result.json").is_file(), f"no result.json; stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc, json.loads((out / "result.json").read_text())


def assert_failed(proc: subprocess.CompletedProcess, result: dict, problems: int) -> list[str]:
    """Exit 1, result.json says so, and the last line points at the report; returns stdout lines."""
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == os.EX_DATAERR, proc.stdout + proc.stderr
    assert result["success"] is False
    assert lines[-1] == f"validation failed: {problems} problem(s); report: {result['report_path']}"
    assert Path(result["report_path"]).is_file()
    return lines


def test_valid_dataset_passes(tmp_path: Path) -> None:
    second = "raw/intent/dt=2026-09-08/part-00000.csv"
    proc, result = run_validate(tmp_path, {PART: csv_text(*GOOD_ROWS), second: csv_text(*GOOD_ROWS[:2])}, min_rows=6)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert result["success"] is True
    assert result["rows"] == 6
    assert result["failures"] == []
    assert result["expectations"] and all(result["expectations"].values())
    assert "expect_column_values_to_be_in_set(category)" in result["expectations"]
    report = json.loads(Path(result["report_path"]).read_text())
    assert report["gx_result"]["success"] is True
    assert (
        (Path(result["report_path"]).parent / "validation_report.md").read_text().startswith("# validate_raw: PASSED")
    )
    assert proc.stdout.strip().splitlines()[-1].startswith("validation passed: 6 rows")


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    """Excel starts a CSV with a byte-order mark: it is not part of the first column's name, whichever column that
    is."""
    second = "raw/intent/dt=2026-09-08/part-00000.csv"
    label_first = ["card_arrival,I am still waiting on my card?", "card_linking,How do I link my new card?"]
    files = {PART: "\ufeff" + csv_text(*GOOD_ROWS), second: "\ufeff" + csv_text(*label_first, header="category,text")}
    proc, result = run_validate(tmp_path, files, min_rows=6)
    assert (tmp_path / "store" / PART).read_bytes().startswith(b"\xef\xbb\xbf")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert result["success"] is True and result["rows"] == 6 and result["failures"] == []


def test_malformed_csv_lines_name_file_and_line(tmp_path: Path) -> None:
    other = "raw/intent/dt=2026-09-08/part-00000.csv"
    files = {
        PART: csv_text(GOOD_ROWS[0], "too,many,fields", GOOD_ROWS[1], '"bad"quoting,card_arrival'),
        other: csv_text(GOOD_ROWS[0], "just one field"),
    }
    proc, result = run_validate(tmp_path, files)
    lines = assert_failed(proc, result, problems=3)
    assert (
        f"{PART}: line 3: malformed CSV record: 2 fields, as in the header (value: \"3 fields: ['too', 'many', "
        "'fields']\")" in lines
    )
    assert any(line.startswith(f"{PART}: line 5: malformed CSV record: well-formed quoting") for line in lines)
    # Problems are collected over every file before stopping.
    assert any(line.startswith(f"{other}: line 3: malformed CSV record: 2 fields") for line in lines)
    assert result["expectations"] == {}  # structure failed, so GX never ran


def test_missing_column_names_header_row(tmp_path: Path) -> None:
    proc, result = run_validate(tmp_path, {PART: csv_text(*GOOD_ROWS, header="text,intent")})
    lines = assert_failed(proc, result, problems=2)
    assert lines[0] == f"{PART}: row 1 (header): header has required column 'category' (value: ['text', 'intent'])"
    assert result["failures"] == [
        {"file": PART, "line": 1, "rule": "header has required column 'category'", "value": ["text", "intent"]},
        {
            "file": PART,
            "line": 1,
            "rule": "header has only the configured columns 'text' and 'category' (unexpected: ['intent'])",
            "value": ["text", "intent"],
        },
    ]


def test_extra_or_repeated_columns_name_the_file_and_the_columns(tmp_path: Path) -> None:
    """Both once passed validation, and the ETL then crashed in Spark and was retried."""
    second = "raw/intent/dt=2026-09-08/part-00000.csv"
    rows = [row + ",web" for row in GOOD_ROWS]
    proc, result = run_validate(
        tmp_path,
        {
            PART: csv_text(*rows, header="text,category,channel"),
            second: csv_text(*(r + ",again" for r in GOOD_ROWS), header="text,category,text"),
        },
    )
    lines = assert_failed(proc, result, problems=2)
    assert (
        f"{PART}: row 1 (header): header has only the configured columns 'text' and 'category' (unexpected: "
        "['channel'])" in lines[0]
    )
    assert lines[1].startswith(f"{second}: row 1 (header): header names column 'text' once (it appears 2 times)")


def test_unknown_label_names_line(tmp_path: Path) -> None:
    # GOOD_ROWS[2] spans lines 4-5, so the bad label (record 5) is on line 7.
    proc, result = run_validate(tmp_path, {PART: csv_text(*GOOD_ROWS, "Where is my card?,card_arival")})
    lines = assert_failed(proc, result, problems=1)
    assert lines[0] == f"{PART}: line 7: category in the allowed labels (labels.json) (value: 'card_arival')"
    assert result["failures"][0]["line"] == 7
    assert result["expectations"]["expect_column_values_to_be_in_set(category)"] is False


def test_a_retrieval_pair_whose_passage_is_not_in_the_corpus_names_file_row_and_rule(tmp_path: Path) -> None:
    """embedding_adapter's raw contract as shipped: query,passage_id, with the corpus's passage ids as the labels
    file."""
    from retrain.config import load_model

    data = load_model("embedding_adapter").data
    rows = [
        "where is my new card?,p_card_arrival",
        "how do I link my card?,p_card_linking",
        "what is the rate for euros?,p_no_such_passage",
    ]
    proc, result = run_validate(
        tmp_path,
        {PART: csv_text(*rows, header=f"{data.text_column},{data.label_column}")},
        columns=(data.text_column, data.label_column),
        labels=PROJECT_ROOT / data.labels_file,
    )
    lines = assert_failed(proc, result, problems=1)
    assert (
        lines[0] == f"{PART}: line 4: passage_id in the allowed labels (passage_ids.json) (value: 'p_no_such_passage')"
    )


def test_empty_text_is_rejected(tmp_path: Path) -> None:
    proc, result = run_validate(
        tmp_path, {PART: csv_text(GOOD_ROWS[0], "   ,card_arrival", ",card_linking", GOOD_ROWS[1])}
    )
    lines = assert_failed(proc, result, problems=2)
    assert f"{PART}: line 3: text non-empty after strip (at least 2 chars) (value: '')" in lines
    assert f"{PART}: line 4: text is present (not null/empty) (value: None)" in lines


def test_too_few_rows(tmp_path: Path) -> None:
    proc, result = run_validate(tmp_path, {PART: csv_text(*GOOD_ROWS)}, min_rows=10)
    lines = assert_failed(proc, result, problems=1)
    assert lines[0] == "raw_manifest.json: at least 10 rows (value: 4)"
    assert result["expectations"]["expect_table_row_count_to_be_between"] is False
    assert result["rows"] == 4


def banking_rows(per_label: int, labels: int = 10) -> Iterator[tuple[str, str]]:
    """Distinct real Banking77 rows: the first ``per_label`` of each of its first ``labels`` categories."""
    taken: dict[str, int] = {}
    with open(PROJECT_ROOT / "data" / "banking77" / "train.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if len(taken) < labels or row["category"] in taken:
                taken.setdefault(row["category"], 0)
                if taken[row["category"]] < per_label:
                    taken[row["category"]] += 1
                    yield row["text"], row["category"]


def run_shipped_spec(tmp_path: Path, rows: list[tuple[str, str]], previous: dict | None = None):
    """validate_raw as the intent DAG runs it (the shipped config's job spec, the runner's mapping) on one partition of
    the interval; ``previous`` is a dataset version's label distribution, published for an earlier interval."""
    store = LocalStore(tmp_path / "store")
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([("text", "category"), *rows])
    manifest = write_raw(store.root, {PART: out.getvalue()})
    if previous is not None:
        lineage = {"data_interval_end": START.isoformat()}
        version = {"dataset_version": "ds-before", "created_at": START.isoformat(), "lineage": lineage}
        store.path("datasets/intent/ds-before").mkdir(parents=True)
        (store.path("datasets/intent/ds-before") / "manifest.json").write_text(
            json.dumps({**version, "label_distribution": {"train": previous, "validation": {}}})
        )
    upstream = {"snapshot_raw": {"manifest_path": str(manifest)}}
    ctx = RunContext("retrain_intent", "r1", START, END, upstream=upstream)
    spec = local_job(validate_raw_spec(load_model("intent"), ctx), store)
    proc = subprocess.run(command_line(spec), env=job_environment(spec), capture_output=True, text=True, timeout=300)
    return proc, json.loads(spec.result_file.read_text())


PARTITION = PART.rsplit("/", 1)[0]


def test_a_partition_of_one_label_is_refused_naming_the_partition_and_the_share(tmp_path: Path) -> None:
    rows = [(text, "card_arrival") for text, _ in banking_rows(20)]
    proc, result = run_shipped_spec(tmp_path, rows)
    assert_failed(proc, result, 1)
    [problem] = result["failures"]
    assert problem["file"] == PARTITION and problem["rule"].startswith("label_share: one label at most 80%")
    assert problem["value"] == "card_arrival: 200 of 200 rows (100.0%)"


def test_a_row_repeated_many_times_is_refused_naming_the_partition_and_the_rate(tmp_path: Path) -> None:
    rows = list(banking_rows(10))
    proc, result = run_shipped_spec(tmp_path, rows + [rows[0]] * 50)
    assert_failed(proc, result, 1)
    [problem] = result["failures"]
    assert problem["file"] == PARTITION and problem["rule"].startswith("duplicate_rate: at most 2%")
    assert problem["value"].startswith("50 of 150 rows (33.3%); most repeated (51x)")


def test_a_label_that_grew_past_the_previous_version_warns_naming_the_partition_and_the_shares(tmp_path: Path) -> None:
    rows = list(banking_rows(10))
    grown = rows + [(f"{text} please", label) for text, label in banking_rows(20, 1)]  # the first label: 30 of 120
    previous = dict.fromkeys({label for _, label in rows}, 100)  # 10% each
    proc, result = run_shipped_spec(tmp_path, grown, previous)
    assert proc.returncode == 0 and result["success"], proc.stdout + proc.stderr
    [warning] = result["warnings"]
    label = rows[0][1]
    assert warning["file"] == PARTITION and "from dataset version ds-before" in warning["rule"]
    assert warning["value"] == f"{label}: 10.0% -> 25.0% (30 of 120 rows)"
    assert f"warning: {PARTITION}: label_shift" in proc.stdout
    _, unchanged = run_shipped_spec(tmp_path / "same", rows, previous)
    assert unchanged["success"] and unchanged["warnings"] == []
