"""Evaluation side of the embedding_adapter task type: ranking metrics over a golden corpus.

The golden directory holds ``golden.jsonl`` (queries: key, text), ``corpus.jsonl`` and
``qrels.jsonl`` (retrain_jobs.tasks.embedding_adapter.model; a qrels row naming an unknown query or passage is refused,
naming the file and the line). Each model embeds the corpus once (its index) and ranks every
passage for every query by cosine similarity; ties keep corpus order. Per query, over the
passages with relevance > 0:

- recall@k: the share of the relevant passages in the top k (k = 1, 5, 10);
- MRR@10: 1 / rank of the first relevant passage if it is in the top 10, else 0;
- nDCG@10: DCG@10 / ideal DCG@10, DCG = sum over ranks i <= 10 of relevance_i / log2(i + 1)
  (linear gain, as trec_eval).

A model's figure is the mean over queries. The frozen encoder under the challenger's adapter is
scored the same way, as the baseline in the same report, and the per-query figures of every
model go to ``paired`` for the gate's paired bootstrap over queries. Latency is one request as
serving makes it: embed one query and take the top 10 of the indexed corpus.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from retrain_jobs.ranking import ranking_metrics
from retrain_jobs.report import against_baseline
from retrain_jobs.tasks.embedding_adapter import train as training_side
from retrain_jobs.tasks.embedding_adapter.model import RetrievalDataError, read_corpus, read_qrels

METRICS = ("recall_at_1", "recall_at_5", "recall_at_10", "mrr_at_10", "ndcg_at_10")
NAMES = {
    "recall_at_1": "recall@1",
    "recall_at_5": "recall@5",
    "recall_at_10": "recall@10",
    "mrr_at_10": "MRR@10",
    "ndcg_at_10": "nDCG@10",
}
LATENCY_CALL = "embed([query]) + cosine against the indexed corpus + top 10"

load = training_side.load
"""The task's loader (weights checked against the recorded digest), shared with serving and rollback."""


@dataclass
class Golden:
    """The golden queries (key order), each with its relevant passages, and the corpus."""

    queries: list[dict]
    corpus: dict[str, str]

    def __len__(self) -> int:
        return len(self.queries)


def read_golden(golden_dir: Path) -> Golden:
    """Queries, corpus and qrels of a (verified) golden directory."""
    queries_path, corpus_path = golden_dir / "golden.jsonl", golden_dir / "corpus.jsonl"
    queries: dict[str, str] = {}
    for line_no, line in enumerate(queries_path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            row = json.loads(line)
            if row["key"] in queries:
                raise RetrievalDataError(
                    f"{queries_path}: line {line_no}: key {row['key']!r} repeated; rule: query keys are unique"
                )
            queries[row["key"]] = row["text"]
    if not queries:
        raise ValueError(f"{queries_path}: no examples")
    corpus = read_corpus(corpus_path)
    qrels = read_qrels(golden_dir / "qrels.jsonl", set(queries), corpus, queries_path, corpus_path)
    return Golden([{"key": k, "text": queries[k], "relevant": qrels[k]} for k in sorted(queries)], corpus)


def _rank(query_embeddings: torch.Tensor, index: torch.Tensor, relevance: np.ndarray) -> dict[str, np.ndarray]:
    return ranking_metrics((query_embeddings @ index.T).numpy(), relevance)


def _block(per_query: dict[str, np.ndarray], seconds: float) -> dict:
    return {**{m: float(np.mean(per_query[m])) for m in METRICS}, "eval_seconds": round(seconds, 3)}


def score(golden: Golden, challenger, champion, batch_size: int, options: dict) -> dict:
    """Both models' blocks, the frozen encoder's as the baseline, and the per-query figures of each."""
    passage_ids = list(golden.corpus)
    texts = [golden.corpus[p] for p in passage_ids]
    relevance = np.array([[q["relevant"].get(p, 0) for p in passage_ids] for q in golden.queries])
    queries = [q["text"] for q in golden.queries]
    blocks, per_query = {}, {}
    for role, model in (("challenger", challenger), ("champion", champion)):
        if model is None:
            blocks[role] = per_query[role] = None
            continue
        started = time.perf_counter()
        with torch.inference_mode():
            model.index = model.embed(texts, batch_size)  # kept on the model: predict_one ranks against it
            per_query[role] = _rank(model.embed(queries, batch_size), model.index, relevance)
        blocks[role] = _block(per_query[role], time.perf_counter() - started)
    started = time.perf_counter()
    frozen_index = challenger.embed_frozen(texts, batch_size)
    per_query["baseline"] = _rank(challenger.embed_frozen(queries, batch_size), frozen_index, relevance)
    baseline = {
        **_block(per_query["baseline"], time.perf_counter() - started),
        "base_model": challenger.spec.base_model,
    }
    paired = {
        "keys": [q["key"] for q in golden.queries],
        **{
            role: None if figures is None else {m: figures[m].tolist() for m in METRICS}
            for role, figures in per_query.items()
        },
    }
    fields = {"n_passages": len(passage_ids), "baseline": baseline}
    protocol = {
        "call": LATENCY_CALL,
        "ranking": "cosine over the whole corpus, ties in corpus order; figures are means over queries",
        "ndcg": "linear gain, log2(rank + 1) discount, cut at 10",
    }
    return {"fields": fields, "blocks": blocks, "paired": paired, "protocol": protocol}


def latency_requests(golden: Golden) -> list[str]:
    """What one request holds: one golden query."""
    return [q["text"] for q in golden.queries]


@torch.inference_mode()
def predict_one(model, request: str) -> None:
    """Embed one query and take the top 10 of the indexed corpus."""
    torch.topk(model.embed([request], 1) @ model.index.T, k=min(10, len(model.index)))


def summary_rows(metrics: dict) -> list[tuple[str, str, bool, str]]:
    """(block key, name, higher is better, format) of the headline figures."""
    return [(m, NAMES[m], True, ".4f") for m in METRICS]


def describe(metrics: dict) -> str:
    return f"{metrics['n_passages']} passages; frozen {html.escape(metrics['baseline']['base_model'])} as baseline"


def report_sections(metrics: dict) -> list[str]:
    """The frozen encoder beside the adapter models, and the queries the challenger gains and loses against it."""
    return against_baseline(metrics, {m: NAMES[m] for m in METRICS}, "frozen encoder", "ndcg_at_10")
