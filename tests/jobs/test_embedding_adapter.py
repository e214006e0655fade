"""The embedding_adapter task type on tiny data: training (train.py as SageMaker runs it), its ranking
metrics by hand, evaluation end to end, and bad retrieval input named by file, row and rule.

Tiny data: 8 intents of data/retrieval (Banking77, CC BY 4.0, see its SOURCE.md), their passages,
12 training and 4 validation pairs each.
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
INTENTS = [
    "card_arrival",
    "exchange_rate",
    "lost_or_stolen_card",
    "top_up_failed",
    "pin_blocked",
    "card_linking",
    "cash_withdrawal_charge",
    "pending_transfer",
]


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture(scope="module")
def channels(tmp_path_factory) -> dict[str, Path]:
    """train/ and validation/ channels as build_dataset writes them (<split>.jsonl rows {key, text: query,
    label: passage id, label_id}), the corpus file training gets as --corpus-file, from data/retrieval."""
    import csv

    root = tmp_path_factory.mktemp("retrieval")
    corpus = [json.loads(line) for line in (DATA / "corpus.jsonl").read_text().splitlines()]
    corpus = [p for p in corpus if p["passage_id"][2:] in INTENTS]
    by_passage: dict[str, list[str]] = {p["passage_id"]: [] for p in corpus}
    with open(DATA / "train.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["passage_id"] in by_passage and len(by_passage[row["passage_id"]]) < 16:
                by_passage[row["passage_id"]].append(row["query"])
    (root / "corpus.jsonl").write_text(jsonl(corpus))
    ids = {pid: i for i, pid in enumerate(by_passage)}
    for split, rows in (("train", slice(0, 12)), ("validation", slice(12, 16))):
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
        "root": root,
    }


def spec_for(channels, out: Path, **overrides) -> LocalJob:
    return training_spec(
        channels,
        out,
        {
            "task": "embedding_adapter",
            "dataset-version": "ds-tiny",
            "epochs": "8",
            "batch-size": "16",
            "adapter-learning-rate": "0.005",
            "adapter-rank": "16",
            "max-seq-length": "64",
            "threads": "2",
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


def test_loss_falls_and_the_adapter_learns(first_run):
    summary, out = first_run
    losses = [epoch["train_loss"] for epoch in summary["history"]]
    assert losses[-1] < losses[0] * 0.8, losses
    assert summary["task"] == "embedding_adapter" and summary["n_train"] == 96 and summary["n_validation"] == 32
    assert summary["history"][-1]["val_recall_at_1"] >= summary["history"][0]["val_recall_at_1"]
    for name in ("adapter.json", "adapter.safetensors", "encoder/config.json", "encoder/tokenizer.json"):
        assert (out / "model" / name).is_file(), name


def test_same_inputs_give_the_same_weights_digest(first_run, channels, tmp_path):
    summary, _ = first_run
    assert train(spec_for(channels, tmp_path / "again"))["weights_digest"] == summary["weights_digest"]
    assert train(spec_for(channels, tmp_path / "seed8", seed=8))["weights_digest"] != summary["weights_digest"]


KILLED_EPOCHS = 24  # an epoch takes a fraction of a second: after epoch 3, 21 more leave seconds for the kill to land


def test_killed_job_resumes_to_the_same_weights(channels, tmp_path):
    uninterrupted = train(spec_for(channels, tmp_path / "whole", epochs=KILLED_EPOCHS))
    spec = spec_for(channels, tmp_path / "killed", epochs=KILLED_EPOCHS)
    summary = kill_and_resume(spec, 3)
    assert [h["epoch"] for h in summary["history"]] == list(range(1, KILLED_EPOCHS + 1))
    assert summary["weights_digest"] == uninterrupted["weights_digest"]


def test_a_pair_whose_passage_is_not_in_the_corpus_names_file_row_and_rule(channels, tmp_path):
    bad = tmp_path / "bad-train"
    bad.mkdir()
    lines = (channels["train"] / "train.jsonl").read_text().splitlines()
    lines[2] = json.dumps({"key": "x", "text": "where is my card", "label": "p_no_such_intent", "label_id": 99})
    (bad / "train.jsonl").write_text("\n".join(lines) + "\n")
    spec = spec_for(channels, tmp_path / "out")
    proc = run(spec, {"SM_CHANNEL_TRAIN": str(bad)})
    assert proc.returncode == os.EX_DATAERR, proc.stderr[-2000:]
    assert (
        f"{bad / 'train.jsonl'}: line 3: passage_id 'p_no_such_intent' is not in {channels['corpus_file']}"
        in proc.stderr
    )
    assert "rule: every pair's passage is in the corpus" in proc.stderr
    assert not any(spec.model_dir.iterdir()) and not any(spec.checkpoint_dir.iterdir())  # nothing written


# Three queries, four passages (columns p0..p3), scores already ranked per row:
#   q0: relevant p1 (grade 1).       ranking p1 p0 p2 p3 -> first relevant at rank 1:
#       recall@1 = 1, MRR = 1, nDCG = 1
#   q1: relevant p0 (1), p3 (2).     ranking p2 p0 p1 p3 -> relevant at ranks 2 (grade 1) and 4 (grade 2):
#       recall@1 = 0, recall@5 = 1, MRR = 1/2,
#       DCG = 1/log2(3) + 2/log2(5), ideal = 2/log2(2) + 1/log2(3) -> nDCG = (0.63093 + 0.86135) / (2 + 0.63093) =
# 0.567207
#   q2: relevant p2 (1).             scores tie everywhere -> corpus order p0 p1 p2 p3, relevant at rank 3:
#       recall@1 = 0, recall@5 = 1, MRR = 1/3, nDCG = 1/log2(4) = 0.5
def test_ranking_metrics_by_hand():
    env = job_environment(spec_for({"train": Path("."), "validation": Path("."), "corpus_file": ""}, Path("/tmp")))
    done = subprocess.run(
        [str(job_python()), str(JOBSIDE / "ranking_fixture.py")], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["recall_at_1"] == [1.0, 0.0, 0.0]
    assert got["recall_at_5"] == [1.0, 1.0, 1.0] and got["recall_at_10"] == [1.0, 1.0, 1.0]
    assert got["mrr_at_10"] == pytest.approx([1.0, 0.5, 1 / 3])
    assert got["ndcg_at_10"] == pytest.approx([1.0, 0.567207, 0.5], abs=1e-6)


def publish(store: LocalStore, key: str, queries, corpus, qrels) -> Path:
    staging = store.staging_dir(key)
    for name, rows in (("golden.jsonl", queries), ("corpus.jsonl", corpus), ("qrels.jsonl", qrels)):
        (staging / name).write_text(jsonl(rows))
    write_manifest_and_publish(
        store, staging, key, {"golden_version": key.rsplit("/", 1)[1], "model": "embedding_adapter"}
    )
    return store.path(key)


def evaluate(golden: Path, challenger: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        str(job_python()),
        str(INCLUDE_DIR / "retrain_jobs" / "evaluate.py"),
        "--task",
        "embedding_adapter",
        "--challenger-dir",
        str(challenger),
        "--golden-dir",
        str(golden),
        "--output-dir",
        str(out),
        "--batch-size",
        "16",
        "--latency-requests",
        "10",
        "--latency-warmup",
        "2",
        *extra,
    ]
    env = job_environment(spec_for({"train": Path("."), "validation": Path("."), "corpus_file": ""}, Path("/tmp")))
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)


@pytest.fixture(scope="module")
def golden(channels, tmp_path_factory) -> Path:
    """The validation pairs as golden queries with their qrels, published through the store."""
    pairs = [json.loads(line) for line in (channels["validation"] / "validation.jsonl").read_text().splitlines()]
    store = LocalStore(tmp_path_factory.mktemp("store"))
    return publish(
        store,
        "golden/embedding_adapter/v1",
        [{"key": p["key"], "text": p["text"]} for p in pairs],
        channels["corpus"],
        [{"query_id": p["key"], "passage_id": p["label"], "relevance": 1} for p in pairs],
    )


@pytest.fixture(scope="module")
def fresh(channels, tmp_path_factory) -> tuple[dict, Path]:
    """A fresh adapter (0 epochs: the zero-initialised residual, so the frozen encoder): its summary and model dir."""
    out = tmp_path_factory.mktemp("fresh")
    return train(spec_for(channels, out, epochs=0)), out / "model"


def test_evaluation_scores_adapter_champion_and_frozen_baseline(first_run, fresh, golden, tmp_path):
    """A fresh adapter (0 epochs: the zero-initialised residual) is the frozen encoder, so it must score exactly the
    baseline."""
    summary, out = first_run
    fresh, fresh_dir = fresh
    proc = evaluate(
        golden,
        out / "model",
        tmp_path / "eval",
        "--champion-dir",
        str(fresh_dir),
        "--champion-version",
        "1",
        "--challenger-digest",
        summary["weights_digest"],
        "--champion-digest",
        fresh["weights_digest"],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["task"] == "embedding_adapter" and metrics["n_examples"] == 32 and metrics["n_passages"] == 8
    baseline, champion, challenger = metrics["baseline"], metrics["champion"], metrics["challenger"]
    for m in ("recall_at_1", "recall_at_5", "recall_at_10", "mrr_at_10", "ndcg_at_10"):
        assert champion[m] == pytest.approx(baseline[m], abs=1e-9), m
        assert challenger[m] == pytest.approx(sum(metrics["paired"]["challenger"][m]) / 32), m
        assert 0.0 <= challenger[m] <= 1.0
    assert challenger["recall_at_10"] == 1.0  # 8 passages: every relevant one is in the top 10
    assert challenger["latency_ms"]["n"] == 10
    assert "frozen encoder" in (tmp_path / "eval" / "report.html").read_text()


def test_qrels_naming_an_unknown_query_names_file_row_and_rule(channels, fresh, tmp_path):
    store = LocalStore(tmp_path / "store")
    queries = [{"key": "q1", "text": "my card has not arrived"}, {"key": "q2", "text": "what is the exchange rate"}]
    qrels = [
        {"query_id": "q1", "passage_id": "p_card_arrival", "relevance": 1},
        {"query_id": "q2", "passage_id": "p_exchange_rate", "relevance": 1},
        {"query_id": "q9", "passage_id": "p_card_arrival", "relevance": 1},
    ]
    golden = publish(store, "golden/embedding_adapter/bad", queries, channels["corpus"], qrels)
    _, fresh_dir = fresh
    proc = evaluate(golden, fresh_dir, tmp_path / "eval")
    assert proc.returncode == os.EX_DATAERR, proc.stderr[-2000:]
    assert f"{golden / 'qrels.jsonl'}: line 3: query_id 'q9' is not in {golden / 'golden.jsonl'}" in proc.stderr
    assert "rule: qrels name only known queries" in proc.stderr
    assert not (tmp_path / "eval" / "metrics.json").exists()
