"""include/etl/build_dataset.py, run as the local runner runs it: a subprocess of the job
environment's interpreter with ``--key value`` arguments and PYTHONPATH=include:plugins.

Spark start-up costs ~10 s a run, so the successful builds are shared through module-scoped
fixtures: build A, build A again (reuse), build A+B (growth). The tampered-golden case fails
before Spark starts; the other Spark runs are A saved with a BOM, and two unknown-label cases.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import math
import os
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from retrain.paths import INCLUDE_DIR, PROJECT_ROOT, job_python
from retrain.runner import LocalJob, command_line, job_environment
from retrain.snapshot import snapshot_raw
from retrain.store import LocalStore, sha256_file, tree_digest, verify_tree, write_manifest_and_publish

pytestmark = pytest.mark.skipif(not job_python().exists(), reason=f"job environment missing at {job_python()}")

MODEL = "toy"
LABELS = ["card_arrival", "exchange_rate", "lost_card", "top_up"]
FRACTION = 0.5
WEEK_A = (datetime(2026, 9, 7, tzinfo=UTC), datetime(2026, 9, 14, tzinfo=UTC))
WEEK_B = (datetime(2026, 9, 14, tzinfo=UTC), datetime(2026, 9, 21, tzinfo=UTC))

# Partition A, 32 rows. Comments give each row's fate; the expected counts below follow from them.
ROWS_A = [
    ("Where is my card?", "card_arrival"),
    ("Where is my card?", "card_arrival"),  # exact duplicate of the row above
    ("  where is   MY card  ", "card_arrival"),  # normalised duplicate of it
    ("I lost my card", "lost_card"),
    ("I LOST my card.", "lost_card"),  # normalised duplicate...
    ("i lost my card!!", "top_up"),  # ...and a conflicting label: lost_card wins 2 votes to 1
    ("What is the exchange rate today", "exchange_rate"),  # in the golden set: contamination
    ("Hello, I need my card\nfor a trip", "card_arrival"),  # quoted comma and newline
    ("ｆｕｌｌ width top up", "top_up"),  # full-width letters: after NFKC cleaning, an exact duplicate of the next row
    ("full width top up", "top_up"),
    ("Tie breaker phrase", "top_up"),
    ("tie breaker phrase!", "lost_card"),  # 1:1 tie, broken by label name: lost_card
] + [(f"How do I top up with card number {i}?", LABELS[i % 4]) for i in range(20)]
ROWS_B = [("where is my card", "card_arrival")] + [
    (f"Can I exchange currency number {i}", "exchange_rate") for i in range(20)
]
GOLDEN = [("What is the exchange rate today?", "exchange_rate"), ("My card is blocked", "lost_card")]


def norm_key(normalised: str) -> str:
    return hashlib.sha256(normalised.encode()).hexdigest()


def is_validation(key: str) -> bool:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32 < FRACTION


def write_partition(
    root: Path, dt: str, rows: list[tuple[str, str]], bom: bool = False, label_first: bool = False
) -> Path:
    """One raw CSV; ``bom`` starts it with a UTF-8 byte-order mark, as Excel saves a CSV."""
    path = root / "raw" / MODEL / f"dt={dt}" / "part-00000.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    order = (lambda r: r[::-1]) if label_first else (lambda r: r)
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(order(["utterance", "intent"]))
        writer.writerows(order(list(row)) for row in rows)
    return path


def make_store(root: Path, rows_a: list[tuple[str, str]] = ROWS_A, **csv_style) -> LocalStore:
    """A store with partition A and a published golden version v1."""
    store = LocalStore(root)
    write_partition(root, "2026-09-07", rows_a, **csv_style)
    staging = store.staging_dir(f"golden/{MODEL}/v1")
    lines = [
        json.dumps({"key": norm_key(t), "text": t, "label": lab, "label_id": LABELS.index(lab)}) for t, lab in GOLDEN
    ]
    (staging / "golden.jsonl").write_text("\n".join(lines) + "\n")
    write_manifest_and_publish(store, staging, f"golden/{MODEL}/v1", {"golden_version": "v1", "model": MODEL})
    return store


def run_build(
    store: LocalStore, interval: tuple[datetime, datetime], labels_file: Path, name: str, **extra: str
) -> tuple[subprocess.CompletedProcess, Path]:
    """Snapshot the raw data for ``interval``, then run the script exactly as the local runner would."""
    out = store.root / "runs" / MODEL / name
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "raw_manifest.json"
    manifest_path.write_text(json.dumps(snapshot_raw(store, MODEL, *interval)))
    spec = LocalJob(
        name="build_dataset",
        kind="glue",
        script=INCLUDE_DIR / "etl" / "build_dataset.py",
        arguments={
            "model": MODEL,
            "raw-manifest": str(manifest_path),
            "store-root": str(store.root),
            "text-column": "utterance",
            "label-column": "intent",
            "labels-file": str(labels_file),
            "golden-version": "v1",
            "validation-fraction": str(FRACTION),
            "result-file": str(out / "result.json"),
            **{key.replace("_", "-"): value for key, value in extra.items()},
        },
        result_file=out / "result.json",
    )
    proc = subprocess.run(
        command_line(spec) + ["--JOB_NAME", "ignored-like-on-glue"],
        env=job_environment(spec),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc, spec.result_file


def succeeded(proc: subprocess.CompletedProcess, result_file: Path) -> dict:
    assert proc.returncode == 0, f"build_dataset failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(result_file.read_text())


def read_version(result: dict) -> dict[str, list[dict]]:
    directory = Path(result["dataset_dir"])
    return {
        s: [json.loads(line) for line in (directory / s / f"{s}.jsonl").read_text().splitlines()]
        for s in ("train", "validation")
    }


def file_state(directory: Path) -> dict[str, tuple[int, str]]:
    return {
        p.relative_to(directory).as_posix(): (p.stat().st_mtime_ns, sha256_file(p))
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "labels.json"
    path.write_text(json.dumps(LABELS))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> LocalStore:
    return make_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def first_build(store, labels_file) -> dict:
    return succeeded(*run_build(store, WEEK_A, labels_file, "first"))


@pytest.fixture(scope="module")
def rebuild(store, labels_file, first_build) -> dict:
    """The same snapshot again, with the file state of the first version before and after."""
    directory = Path(first_build["dataset_dir"])
    before = file_state(directory)
    result = succeeded(*run_build(store, WEEK_A, labels_file, "again"))
    return {"result": result, "before": before, "after": file_state(directory)}


@pytest.fixture(scope="module")
def grown_build(store, labels_file, rebuild, first_build) -> dict:
    write_partition(store.root, "2026-09-14", ROWS_B)
    before = file_state(Path(first_build["dataset_dir"]))
    result = succeeded(*run_build(store, WEEK_B, labels_file, "grown"))
    return {"result": result, "first_before": before, "first_after": file_state(Path(first_build["dataset_dir"]))}


def test_counts_follow_dedupe_conflicts_and_contamination(first_build):
    assert first_build["counts"] == {
        "raw_rows": 32,
        "empty_text_removed": 0,
        "after_exact_dedupe": 30,  # a copy of "Where is my card?" and the full-width "full width top up"
        "after_normalized_dedupe": 26,  # 30 - 1 (where is my card) - 2 (i lost my card) - 1 (tie breaker phrase)
        "conflicting_labels": 2,  # "i lost my card" and "tie breaker phrase"
        "contaminated_removed": 1,
        "train": first_build["counts"]["train"],
        "validation": first_build["counts"]["validation"],
    }
    assert first_build["counts"]["train"] + first_build["counts"]["validation"] == 25
    assert first_build["reused"] is False


def test_examples_are_cleaned_deduplicated_and_labelled(first_build):
    rows = {r["key"]: r for split in read_version(first_build).values() for r in split}
    assert len(rows) == 25
    assert rows[norm_key("where is my card")]["text"] == "Where is my card?"  # smallest cleaned text of the group
    assert rows[norm_key("i lost my card")]["label"] == "lost_card"  # majority
    assert rows[norm_key("tie breaker phrase")]["label"] == "lost_card"  # tie -> smaller label name
    assert rows[norm_key("hello i need my card for a trip")]["text"] == "Hello, I need my card for a trip"
    assert rows[norm_key("full width top up")]["text"] == "full width top up"  # NFKC folded the full-width copy
    assert norm_key("what is the exchange rate today") not in rows  # golden overlap removed
    for row in rows.values():
        assert list(row) == ["key", "text", "label", "label_id"]
        assert row["label_id"] == LABELS.index(row["label"])


def test_files_sorted_split_by_key_hash_and_version_content_addressed(first_build):
    version = read_version(first_build)
    assert version["train"] and version["validation"]
    for split, rows in version.items():
        keys = [r["key"] for r in rows]
        assert keys == sorted(keys)
        assert all(is_validation(k) == (split == "validation") for k in keys)
    directory = Path(first_build["dataset_dir"])
    manifest = verify_tree(directory)
    assert set(manifest["files"]) == {
        "train/train.jsonl",
        "validation/validation.jsonl",
    }  # each split dir is a training channel
    assert first_build["dataset_version"] == directory.name == "ds-" + manifest["content_sha256"][:16]
    assert manifest["counts"] == first_build["counts"]
    for split, rows in version.items():
        assert manifest["counts"][split] == len(rows)
        assert manifest["label_distribution"][split] == dict(Counter(r["label"] for r in rows))


def test_manifest_records_lineage_and_first_drift(store, first_build):
    manifest = json.loads((Path(first_build["dataset_dir"]) / "manifest.json").read_text())
    raw = json.loads((store.root / "runs" / MODEL / "first" / "raw_manifest.json").read_text())
    lineage = manifest["lineage"]
    assert lineage["raw_manifest_sha256"] == raw["manifest_sha256"]
    assert lineage["raw_files"] == [{"key": f["key"], "sha256": f["sha256"]} for f in raw["files"]]
    assert lineage["golden_content_sha256"] == verify_tree(store.path(f"golden/{MODEL}/v1"))["content_sha256"]
    assert (lineage["data_interval_start"], lineage["data_interval_end"]) == (
        WEEK_A[0].isoformat(),
        WEEK_A[1].isoformat(),
    )
    assert lineage["script_sha256"] == sha256_file(INCLUDE_DIR / "etl" / "build_dataset.py")
    assert lineage["spark_version"] == "3.5.6"
    assert lineage["previous_version"] is None
    assert (
        first_build["drift"]["score"] == 1.0
        and first_build["drift"]["previous_version"] is None
        and first_build["drift"]["reason"]
    )


def test_same_input_reuses_the_version_without_touching_it(store, first_build, rebuild):
    assert rebuild["result"]["dataset_version"] == first_build["dataset_version"]
    assert rebuild["result"]["reused"] is True
    assert rebuild["after"] == rebuild["before"]  # mtime and sha256 of every file, manifest.json included
    assert [p.name for p in store.path(f"datasets/{MODEL}").iterdir()] == [
        first_build["dataset_version"]
    ]  # no staging left


def test_split_is_stable_as_data_grows(first_build, grown_build):
    grown = grown_build["result"]
    assert grown["dataset_version"] != first_build["dataset_version"] and grown["reused"] is False
    before = {r["key"]: split for split, rows in read_version(first_build).items() for r in rows}
    after = {r["key"]: split for split, rows in read_version(grown).items() for r in rows}
    assert len(after) == len(before) + 20  # "where is my card" from B was a normalised duplicate
    assert {key: after.get(key) for key in before} == before
    assert grown_build["first_after"] == grown_build["first_before"]  # older versions are never modified


def test_drift_against_previous_version(first_build, grown_build):
    grown = grown_build["result"]
    drift = grown["drift"]
    assert grown["previous_version"] == drift["previous_version"] == first_build["dataset_version"]
    assert drift["new_example_fraction"] == pytest.approx(20 / 45, abs=1e-6)

    def overall(result: dict) -> dict[str, float]:
        dist = json.loads((Path(result["dataset_dir"]) / "manifest.json").read_text())["label_distribution"]
        totals = {label: dist["train"].get(label, 0) + dist["validation"].get(label, 0) for label in LABELS}
        return {label: n / sum(totals.values()) for label, n in totals.items()}

    p, q = overall(grown), overall(first_build)

    def kl(a, m):
        return sum(a[k] * math.log2(a[k] / m[k]) for k in a if a[k])

    mid = {k: (p[k] + q[k]) / 2 for k in LABELS}
    assert drift["label_js_divergence"] == pytest.approx((kl(p, mid) + kl(q, mid)) / 2, abs=1e-5)
    assert 0 < drift["label_js_divergence"] < drift["new_example_fraction"]
    assert drift["score"] == drift["new_example_fraction"]


def test_utf8_bom_is_accepted_and_gives_the_same_dataset(tmp_path, labels_file, first_build):
    """Excel starts a CSV with a byte-order mark: the same rows give the same version, byte for byte."""
    store = make_store(tmp_path, bom=True)
    assert store.path(f"raw/{MODEL}/dt=2026-09-07/part-00000.csv").read_bytes().startswith(codecs.BOM_UTF8)
    result = succeeded(*run_build(store, WEEK_A, labels_file, "bom"))
    assert result["dataset_version"] == first_build["dataset_version"]
    assert result["counts"] == first_build["counts"]
    version, first = (Path(r["dataset_dir"]) for r in (result, first_build))
    for split in ("train", "validation"):
        assert (version / split / f"{split}.jsonl").read_bytes() == (first / split / f"{split}.jsonl").read_bytes()


@pytest.mark.parametrize(
    "csv_style", [{}, {"bom": True, "label_first": True}], ids=["plain", "excel-bom-on-label-column"]
)
def test_unknown_label_fails_naming_file_row_and_rule(tmp_path, labels_file, csv_style):
    rows = ROWS_A[:2] + [("Send money abroad", "wire_transfer")] + ROWS_A[3:]
    store = make_store(tmp_path, rows, **csv_style)
    proc, result_file = run_build(store, WEEK_A, labels_file, "bad-label")
    assert proc.returncode == os.EX_DATAERR, proc.stdout + proc.stderr  # bad input: not retried
    raw_file = store.path(f"raw/{MODEL}/dt=2026-09-07/part-00000.csv")
    assert f"{raw_file}: row 3: label 'wire_transfer'" in proc.stderr
    assert "label must be one of the 4 allowed labels" in proc.stderr
    assert not result_file.exists()
    assert store.list_keys(f"datasets/{MODEL}") == []


def test_tampered_golden_set_fails_naming_the_file(tmp_path, labels_file):
    store = make_store(tmp_path)
    golden = store.path(f"golden/{MODEL}/v1/golden.jsonl")
    golden.write_text(golden.read_text().replace("My card is blocked", "My card is fine"))
    proc, result_file = run_build(store, WEEK_A, labels_file, "tampered")
    assert proc.returncode == os.EX_DATAERR, proc.stdout + proc.stderr  # bad input: not retried
    assert f"{golden}: sha256" in proc.stderr and "tampered" in proc.stderr
    assert not result_file.exists()
    assert store.list_keys(f"datasets/{MODEL}") == []


def test_a_backfill_compares_with_its_predecessor_not_the_newest_version(store, labels_file, first_build, grown_build):
    """Week A is rebuilt after week B exists (a backfill): nothing came before week A, so no previous version,
    although B's version was created more recently."""
    again = succeeded(*run_build(store, WEEK_A, labels_file, "backfill-a"))
    assert again["dataset_version"] == first_build["dataset_version"]
    assert again["previous_version"] is None and again["drift"]["previous_version"] is None
    assert grown_build["result"]["previous_version"] == first_build["dataset_version"]


def test_a_golden_set_edited_and_rehashed_is_refused_by_the_pin(tmp_path, labels_file):
    """The manifest verifies on its own after a re-hash; only the config's pinned hash catches the edit."""
    store = make_store(tmp_path)
    version = store.path(f"golden/{MODEL}/v1")
    pinned = json.loads((version / "manifest.json").read_text())["content_sha256"]
    golden = version / "golden.jsonl"
    golden.write_text(golden.read_text().replace("My card is blocked", "My card is fine"))
    digest, files = tree_digest(version)
    manifest = {**json.loads((version / "manifest.json").read_text()), "files": files, "content_sha256": digest}
    (version / "manifest.json").write_text(json.dumps(manifest))
    verify_tree(version)  # the forgery is self-consistent
    proc, result_file = run_build(store, WEEK_A, labels_file, "rehashed", expected_golden_sha256=pinned)
    assert proc.returncode == os.EX_DATAERR, proc.stdout + proc.stderr
    assert (
        f"{version / 'manifest.json'}: content_sha256 {digest[:12]}… differs from the pinned {pinned[:12]}…"
        in proc.stderr
    )
    assert not result_file.exists() and store.list_keys(f"datasets/{MODEL}") == []


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (
            "utterance,intent,channel",
            "header has only the configured columns 'utterance' and 'intent' (unexpected: ['channel'])",
        ),
        ("utterance,intent,utterance", "header names column 'utterance' once (it appears 2 times)"),
    ],
)
def test_a_header_with_other_columns_is_bad_data_not_a_crash(tmp_path, labels_file, header, problem):
    store = make_store(tmp_path)
    path = store.path(f"raw/{MODEL}/dt=2026-09-07/part-00000.csv")
    path.write_text(header + "\n" + "".join(f'"{text}",{label},x\n' for text, label in ROWS_A))
    proc, result_file = run_build(store, WEEK_A, labels_file, "bad-header")
    assert proc.returncode == os.EX_DATAERR, proc.stdout + proc.stderr  # bad input: the runner does not retry
    assert f"{path}: row 1 (header): {problem}" in proc.stderr
    assert "Traceback" not in proc.stderr and not result_file.exists()
