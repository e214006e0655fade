"""The cross_encoder_reranking task type on tiny data: training (train.py as SageMaker runs it), its reranking
metrics by hand, evaluation end to end, and bad input named by file, row and rule.

Tiny data: 6 intents of data/retrieval (Banking77, CC BY 4.0, see its SOURCE.md), their passages, 8 training
and 2 validation queries each; 2 hard negatives per query, 4 of 6 layers frozen, 32 tokens per pair.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from jobscripts import JOBSIDE  # tests/ is on pytest's pythonpath
from retrain.paths import INCLUDE_DIR, PROJECT_ROOT, job_python
from retrain.runner import LocalJob, job_environment
from retrain.store import LocalStore, write_manifest_and_publish
from trainspec import kill_and_resume, run_job, train_job, training_spec  # tests/ is on pytest's pythonpath

pytestmark = pytest.mark.skipif(not job_python().exists(), reason=f"job environment missing at {job_python()}")

DATA = PROJECT_ROOT / "data" / "retrieval"
INTENTS = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "pin_blocked", "card_linking"]


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture(scope="module")
def channels(tmp_path_factory) -> dict:
    """train/ and validation/ channels as build_dataset writes them, and the corpus file training gets as
    --corpus-file."""
    import csv

    root = tmp_path_factory.mktemp("reranking")
    corpus = [json.loads(line) for line in (DATA / "corpus.jsonl").read_text().splitlines()]
    corpus = [p for p in corpus if p["passage_id"][2:] in INTENTS]
    by_passage: dict[str, list[str]] = {p["passage_id"]: [] for p in corpus}
    with open(DATA / "train.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["passage_id"] in by_passage and len(by_passage[row["passage_id"]]) < 10:
                by_passage[row["passage_id"]].append(row["query"])
    (root / "corpus.jsonl").write_text(jsonl(corpus))
    ids = {pid: i for i, pid in enumerate(by_passage)}
    for split, rows in (("train", slice(0, 8)), ("validation", slice(8, 10))):
        (root / split).mkdir()
        pairs = [
            {"key": f"{split}-{pid}-{i}", "text": q, "label": pid, "label_id": ids[pid]}
            for pid, queries in by_passage.items()
            for i, q in enumerate(queries[rows])
        ]
        (root / split / f"{split}.jsonl").write_text(jsonl(pairs))
    return {
        "train": root / "train",
        "validation": root / "validation",
        "corpus": corpus,
        "corpus_file": root / "corpus.jsonl",
    }


def spec_for(channels, out: Path, **overrides) -> LocalJob:
    return training_spec(
        channels,
        out,
        {
            "task": "cross_encoder_reranking",
            "dataset-version": "ds-tiny",
            "epochs": "4",
            "batch-size": "8",
            "learning-rate": "0.0002",
            "head-learning-rate": "0.005",
            "negatives": "2",
            "frozen-layers": "4",
            "max-seq-length": "32",
            "threads": "1",
            "seed": "7",
            "corpus-file": str(channels["corpus_file"]),
        },
        overrides,
    )


run, train = run_job, train_job


@pytest.fixture(scope="module")
def first_run(channels, tmp_path_factory):
    out = tmp_path_factory.mktemp("run-a")
    return train(spec_for(channels, out)), out


def test_loss_falls_and_the_reranker_learns(first_run):
    summary, out = first_run
    losses = [epoch["train_loss"] for epoch in summary["history"]]
    assert losses[-1] < losses[0] * 0.8, losses
    assert summary["task"] == "cross_encoder_reranking" and summary["n_train"] == 48 and summary["n_validation"] == 12
    assert summary["history"][-1]["val_loss"] < summary["history"][0]["val_loss"]
    for name in ("reranker.json", "scorer/config.json", "scorer/model.safetensors", "scorer/tokenizer.json"):
        assert (out / "model" / name).is_file(), name


def test_same_inputs_give_the_same_weights_digest(first_run, channels, tmp_path):
    summary, _ = first_run
    assert train(spec_for(channels, tmp_path / "again"))["weights_digest"] == summary["weights_digest"]
    assert train(spec_for(channels, tmp_path / "seed8", seed=8))["weights_digest"] != summary["weights_digest"]


def test_killed_job_resumes_to_the_same_weights(first_run, channels, tmp_path):
    """Killed during epoch 2 of 4 and started again, the job ends with the uninterrupted run's weights."""
    uninterrupted, _ = first_run
    spec = spec_for(channels, tmp_path / "killed")
    summary = kill_and_resume(spec, 1)
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3, 4]
    assert summary["weights_digest"] == uninterrupted["weights_digest"]


def test_a_pair_whose_passage_is_not_in_the_corpus_names_file_row_and_rule(channels, tmp_path):
    bad = tmp_path / "bad-train"
    bad.mkdir()
    lines = (channels["train"] / "train.jsonl").read_text().splitlines()
    lines[4] = json.dumps({"key": "x", "text": "where is my card", "label": "p_no_such_intent", "label_id": 99})
    (bad / "train.jsonl").write_text("\n".join(lines) + "\n")
    spec = spec_for(channels, tmp_path / "out")
    proc = run(spec, {"SM_CHANNEL_TRAIN": str(bad)})
    assert proc.returncode == os.EX_DATAERR, proc.stderr[-2000:]
    assert (
        f"{bad / 'train.jsonl'}: line 5: passage_id 'p_no_such_intent' is not in {channels['corpus_file']}"
        in proc.stderr
    )
    assert "rule: every pair's passage is in the corpus" in proc.stderr
    assert not any(spec.model_dir.iterdir()) and not any(spec.checkpoint_dir.iterdir())  # nothing written


def job_env() -> dict:
    return job_environment(spec_for({"train": Path("."), "validation": Path("."), "corpus_file": ""}, Path("/tmp")))


# tests/jobside/reranking_fixture.py: five queries, each with 4 candidates c0..c3 in first-stage order; the reranker's
# scores per row:
#   q0: gains [0, 1, 0, 0], scores [0.5, 0.9, 0.1, 0.0] -> order c1 c0 c2 c3: relevant first: MRR 1, nDCG 1
#   q1: gains [1, 0, 0, 2], scores [0.7, 0.2, 0.8, 0.1] -> order c2 c0 c1 c3: relevant at ranks 2 (grade 1) and 4
# (grade 2):
#       MRR 1/2; DCG = 1/log2(3) + 2/log2(5) = 0.63093 + 0.86135, ideal = 2 + 1/log2(3) -> nDCG = 0.567207
#   q2: gains [0, 0, 1, 0], all scores tie -> the first-stage order c0 c1 c2 c3: relevant at rank 3: MRR 1/3, nDCG 0.5
#   q3: gains [0, 0, 0, 0] but qrels judge one passage (grade 1) the first stage missed: MRR 0, nDCG 0 (ideal 1, DCG 0)
#   q4: gains [0, 1, 0, 0], qrels judge it and another missed passage (both grade 1), scores keep c1 first:
#       MRR 1, nDCG = 1 / (1 + 1/log2(3)) = 0.613147
def test_reranking_metrics_by_hand():
    done = subprocess.run(
        [str(job_python()), str(JOBSIDE / "reranking_fixture.py")],
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["mrr_at_10"] == pytest.approx([1.0, 0.5, 1 / 3, 0.0, 1.0])
    assert got["ndcg_at_10"] == pytest.approx([1.0, 0.567207, 0.5, 0.0, 0.613147], abs=1e-6)


def publish(store: LocalStore, key: str, files: dict[str, list[dict]]) -> Path:
    staging = store.staging_dir(key)
    for name, rows in files.items():
        (staging / name).write_text(jsonl(rows))
    write_manifest_and_publish(store, staging, key, {"golden_version": key.rsplit("/", 1)[1], "model": "reranker"})
    return store.path(key)


def evaluate(golden: Path, challenger: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        str(job_python()),
        str(INCLUDE_DIR / "retrain_jobs" / "evaluate.py"),
        "--task",
        "cross_encoder_reranking",
        "--challenger-dir",
        str(challenger),
        "--golden-dir",
        str(golden),
        "--output-dir",
        str(out),
        "--batch-size",
        "32",
        "--latency-requests",
        "10",
        "--latency-warmup",
        "2",
        *extra,
    ]
    return subprocess.run(cmd, env=job_env(), capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)


def golden_files(channels) -> dict[str, list[dict]]:
    """The validation queries with their qrels, and candidate lists: all 6 passages, the relevant one placed at rank
    1 + (query index mod 4) with descending made-up first-stage scores, so the first-stage order is known exactly."""
    pairs = [json.loads(line) for line in (channels["validation"] / "validation.jsonl").read_text().splitlines()]
    passage_ids = [p["passage_id"] for p in channels["corpus"]]
    candidates = []
    for i, pair in enumerate(pairs):
        others = [pid for pid in passage_ids if pid != pair["label"]]
        ids = others[: i % 4] + [pair["label"]] + others[i % 4 :]
        candidates.append(
            {"query_id": pair["key"], "passage_ids": ids, "scores": [round(0.9 - 0.05 * r, 2) for r in range(len(ids))]}
        )
    return {
        "golden.jsonl": [{"key": p["key"], "text": p["text"]} for p in pairs],
        "corpus.jsonl": channels["corpus"],
        "qrels.jsonl": [{"query_id": p["key"], "passage_id": p["label"], "relevance": 1} for p in pairs],
        "candidates.jsonl": candidates,
    }


def test_evaluation_scores_reranker_champion_and_first_stage(first_run, channels, tmp_path):
    """A fresh reranker (0 epochs: the zero-initialised head) reproduces the first-stage order, so it must score
    exactly the baseline."""
    summary, out = first_run
    golden = publish(LocalStore(tmp_path / "store"), "golden/reranker/v1", golden_files(channels))
    fresh = train(spec_for(channels, tmp_path / "fresh", epochs=0, max_queries=16, max_validation_queries=4))
    assert fresh["n_train"] == 16 and fresh["n_validation"] == 4 and fresh["steps"] == 0  # the seeded query cap
    proc = evaluate(
        golden,
        out / "model",
        tmp_path / "eval",
        "--champion-dir",
        str(tmp_path / "fresh" / "model"),
        "--champion-version",
        "1",
        "--challenger-digest",
        summary["weights_digest"],
        "--champion-digest",
        fresh["weights_digest"],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["task"] == "cross_encoder_reranking" and metrics["n_examples"] == 12 and metrics["n_candidates"] == 6
    baseline, champion, challenger = metrics["baseline"], metrics["champion"], metrics["challenger"]
    # relevant at ranks 1, 2, 3, 4, 1, 2, ... for the 12 queries: MRR (1 + 1/2 + 1/3 + 1/4) / 4
    assert baseline["mrr_at_10"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert metrics["candidate_recall"] == 1.0
    for m in ("mrr_at_10", "ndcg_at_10"):
        assert champion[m] == pytest.approx(baseline[m], abs=1e-12), m
        assert metrics["paired"]["champion"][m] == metrics["paired"]["baseline"][m]
        assert challenger[m] == pytest.approx(sum(metrics["paired"]["challenger"][m]) / 12), m
        assert 0.0 <= challenger[m] <= 1.0
    assert challenger["latency_ms"]["n"] == 10 and champion["latency_ms"]["n"] == 10
    assert "first stage" in (tmp_path / "eval" / "report.html").read_text()


def test_qrels_naming_an_unknown_query_names_file_row_and_rule(first_run, channels, tmp_path):
    summary, out = first_run
    files = golden_files(channels)
    files["qrels.jsonl"] = files["qrels.jsonl"] + [{"query_id": "q9", "passage_id": "p_card_arrival", "relevance": 1}]
    golden = publish(LocalStore(tmp_path / "store"), "golden/reranker/bad", files)
    proc = evaluate(golden, out / "model", tmp_path / "eval")
    assert proc.returncode == os.EX_DATAERR, proc.stderr[-2000:]
    assert (
        f"{golden / 'qrels.jsonl'}: line 13: query_id 'q9' is not in {golden / 'golden.jsonl'}; rule: qrels name only "
        "known queries" in proc.stderr
    )
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_bad_candidate_lists_name_file_row_and_rule(channels, tmp_path):
    bad = {}
    files = golden_files(channels)
    files["candidates.jsonl"][1]["passage_ids"][2] = "p_no_such_intent"
    bad["unknown passage"] = files
    files = golden_files(channels)
    files["candidates.jsonl"].append({"query_id": "q9", "passage_ids": ["p_card_arrival"] * 6, "scores": [0.0] * 6})
    bad["unknown query"] = files
    files = golden_files(channels)
    files["candidates.jsonl"][3]["scores"] = files["candidates.jsonl"][3]["scores"][::-1]
    bad["ascending scores"] = files
    files = golden_files(channels)
    del files["candidates.jsonl"][5]
    bad["query without a list"] = files
    dirs = []
    for i, rows in enumerate(bad.values()):
        dirs.append(tmp_path / f"g{i}")
        dirs[-1].mkdir()
        for name, content in rows.items():
            (dirs[-1] / name).write_text(jsonl(content))
    done = subprocess.run(
        [str(job_python()), str(JOBSIDE / "read_golden.py"), *map(str, dirs)],
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()[-4:]
    candidates = [d / "candidates.jsonl" for d in dirs]
    assert lines[0] == (
        f"{candidates[0]}: line 2: passage_id 'p_no_such_intent' is not in {dirs[0] / 'corpus.jsonl'}; "
        "rule: candidates are passages of the corpus"
    )
    assert (
        lines[1] == f"{candidates[1]}: line 13: query_id 'q9' is not in {dirs[1] / 'golden.jsonl'}; "
        "rule: candidates name only known queries"
    )
    assert lines[2] == (
        f"{candidates[2]}: line 4: scores are not numbers in descending order; "
        "rule: candidates are the first stage's top k, best first"
    )
    assert (
        lines[3].startswith(f"{candidates[3]}: 1 golden query(ies) without candidates")
        and "rule: every golden query has a candidate list" in lines[3]
    )


def test_the_cached_frozen_bottom_gives_the_whole_models_logits():
    """Training runs the layers above ``frozen_layers`` on the cached output below; serving runs the whole model.
    On a padded batch both must give the same logits."""
    done = subprocess.run(
        [str(job_python()), str(JOBSIDE / "cached_bottom.py")],
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["padded"] > 0 and abs(got["whole"][0] - got["whole"][1]) > 1e-3
    assert got["cached"] == pytest.approx(got["whole"], abs=1e-5)
