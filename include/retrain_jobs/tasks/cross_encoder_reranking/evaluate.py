"""Evaluation side of the cross_encoder_reranking task type: reranking a fixed first-stage candidate list.

The golden directory holds embedding_adapter's ``golden.jsonl`` (queries), ``corpus.jsonl`` and
``qrels.jsonl`` (read by the same readers: a qrels row naming an unknown query or passage is refused,
naming the file and the line), and ``candidates.jsonl``: per query the first stage's top k passages with
their cosines, best first, computed once when the golden version was built and published with it, so the
golden set is immutable and evaluation needs no first-stage model. Every model reorders the same k
candidates. Per query, with the passages of relevance > 0 in qrels:

- MRR@10: 1 / rank of the first relevant passage in the top 10 of the reordered list, else 0;
- nDCG@10: DCG@10 / ideal DCG@10, DCG = sum over ranks i <= 10 of relevance_i / log2(i + 1) (linear gain),
  the ideal taken over all of the query's judged passages, so a relevant passage the first stage missed
  costs every model alike.

A model's figure is the mean over queries. The first-stage order (candidates.jsonl as it is) is scored the
same way as the baseline in the same report, and the per-query figures of every model go to ``paired`` for
the gate's paired bootstrap over queries. Latency is one request as serving makes it: one query with its k
candidates (text and first-stage score) scored and reordered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from retrain_jobs.ranking import reranked_metrics
from retrain_jobs.report import against_baseline
from retrain_jobs.tasks.cross_encoder_reranking import train as training_side
from retrain_jobs.tasks.cross_encoder_reranking.model import read_candidates
from retrain_jobs.tasks.embedding_adapter.evaluate import read_golden as read_retrieval_golden

METRICS = ("mrr_at_10", "ndcg_at_10")
NAMES = {"mrr_at_10": "MRR@10", "ndcg_at_10": "nDCG@10"}

load = training_side.load
"""The task's loader (weights checked against the recorded digest), shared with serving and rollback."""


@dataclass
class Golden:
    """The golden queries (key order), each with its relevant passages and its candidates, and the corpus."""

    queries: list[dict]
    corpus: dict[str, str]
    k: int

    def __len__(self) -> int:
        return len(self.queries)


def read_golden(golden_dir) -> Golden:
    """Queries, corpus, qrels and candidates of a (verified) golden directory."""
    retrieval = read_retrieval_golden(golden_dir)
    keys = [q["key"] for q in retrieval.queries]
    candidates = read_candidates(
        golden_dir / "candidates.jsonl",
        keys,
        retrieval.corpus,
        golden_dir / "golden.jsonl",
        golden_dir / "corpus.jsonl",
    )
    queries = [{**q, **candidates[q["key"]]} for q in retrieval.queries]
    return Golden(queries, retrieval.corpus, len(queries[0]["passage_ids"]))


def _block(per_query: dict[str, np.ndarray], seconds: float) -> dict:
    return {**{m: float(np.mean(per_query[m])) for m in METRICS}, "eval_seconds": round(seconds, 3)}


def score(golden: Golden, challenger, champion, batch_size: int, options: dict) -> dict:
    """Both models' blocks over the same fixed candidates, the first-stage order's as the baseline, and the per-query
    figures."""
    k = golden.k
    gains = np.array([[q["relevant"].get(pid, 0) for pid in q["passage_ids"]] for q in golden.queries])
    ideal = [[r for r in q["relevant"].values() if r > 0] for q in golden.queries]
    first_stage = np.array([q["scores"] for q in golden.queries], dtype=np.float64)
    queries = [q["text"] for q in golden.queries for _ in range(k)]
    passages = [golden.corpus[pid] for q in golden.queries for pid in q["passage_ids"]]
    blocks, per_query = {}, {}
    for role, model in (("challenger", challenger), ("champion", champion)):
        if model is None:
            blocks[role] = per_query[role] = None
            continue
        started = time.perf_counter()
        scores = model.scores(queries, passages, first_stage.reshape(-1), batch_size).reshape(len(golden), k)
        per_query[role] = reranked_metrics(scores, gains, ideal)
        blocks[role] = _block(per_query[role], time.perf_counter() - started)
    per_query["baseline"] = reranked_metrics(first_stage, gains, ideal)
    baseline = {
        **_block(per_query["baseline"], 0.0),
        "source": "first-stage order of candidates.jsonl (frozen bi-encoder, cosine)",
    }
    paired = {
        "keys": [q["key"] for q in golden.queries],
        **{
            role: None if figures is None else {m: figures[m].tolist() for m in METRICS}
            for role, figures in per_query.items()
        },
    }
    fields = {
        "n_candidates": k,
        "candidate_recall": float(np.mean(gains.max(axis=1) > 0)),
        "n_passages": len(golden.corpus),
        "baseline": baseline,
    }
    protocol = {
        "call": f"rerank(query, {k} candidates with text and first-stage score)",
        "ranking": f"each model reorders the same fixed top-{k} first-stage candidates; "
        "ties keep the first-stage order; figures are means over queries",
        "ndcg": "linear gain, log2(rank + 1) discount, cut at 10, ideal over all of the query's judged passages",
    }
    return {"fields": fields, "blocks": blocks, "paired": paired, "protocol": protocol}


def latency_requests(golden: Golden) -> list[dict]:
    """What one request holds: a golden query and its k candidates with text and first-stage score."""
    return [
        {
            "query": q["text"],
            "candidates": [
                {"passage_id": pid, "text": golden.corpus[pid], "score": s}
                for pid, s in zip(q["passage_ids"], q["scores"], strict=True)
            ],
        }
        for q in golden.queries
    ]


def predict_one(model, request: dict) -> None:
    """Score the request's k candidates and reorder them, as serving does."""
    model.rerank(request["query"], request["candidates"])


def summary_rows(metrics: dict) -> list[tuple[str, str, bool, str]]:
    """(block key, name, higher is better, format) of the headline figures."""
    return [(m, NAMES[m], True, ".4f") for m in METRICS]


def describe(metrics: dict) -> str:
    return (
        f"top-{metrics['n_candidates']} first-stage candidates per query (relevant passage among them for "
        f"{metrics['candidate_recall']:.1%} of queries); the first-stage order as baseline"
    )


def report_sections(metrics: dict) -> list[str]:
    """The first-stage order beside the rerankers, and the queries the challenger gains and loses against it."""
    return against_baseline(
        metrics, {m: NAMES[m] for m in METRICS}, "first stage", "ndcg_at_10", metrics["baseline"]["source"]
    )
