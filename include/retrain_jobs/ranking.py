"""Ranking metrics the retrieval-shaped task types share: recall@k, MRR@10 and nDCG@10 per query.

``embedding_adapter`` ranks the whole corpus (``ranking_metrics``); ``cross_encoder_reranking`` reorders
a fixed top-k list (``reranked_metrics``). Both end in ``mrr_and_ndcg``, written once.
"""

from __future__ import annotations

import numpy as np

CUT = 10
"""The cut-off of every figure here: @10."""


def ranking_metrics(scores: np.ndarray, relevance: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query figures from scores (queries × passages) and graded relevance of the same shape."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    gains = np.take_along_axis(relevance, order, axis=1).astype(np.float64)
    hit = gains > 0
    n_relevant = (relevance > 0).sum(axis=1)
    return {
        **{f"recall_at_{k}": hit[:, :k].sum(axis=1) / n_relevant for k in (1, 5, 10)},
        **mrr_and_ndcg(gains, relevance),
    }


def mrr_and_ndcg(ranked: np.ndarray, judged: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query MRR@10 and nDCG@10 from the relevances in ranked order (queries × ranks) and each query's judged
    relevances in any order (queries × n, zero-padded), whose best 10 make the ideal DCG; 0 where a query has none."""
    ranked = ranked[:, :10].astype(np.float64)
    hit = ranked > 0
    first = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)
    discount = 1.0 / np.log2(np.arange(2, 12))
    ideal = -np.sort(-judged.astype(np.float64), axis=1)[:, :10]
    dcg, best = (ranked * discount[: ranked.shape[1]]).sum(axis=1), (ideal * discount[: ideal.shape[1]]).sum(axis=1)
    return {
        "mrr_at_10": np.divide(1.0, first, out=np.zeros(len(first)), where=first > 0),
        "ndcg_at_10": np.divide(dcg, best, out=np.zeros(len(dcg)), where=best > 0),
    }


def reranked_metrics(scores: np.ndarray, gains: np.ndarray, ideal: list[list[int]]) -> dict[str, np.ndarray]:
    """Per-query MRR@10 and nDCG@10 of reordering each row's candidates by ``scores`` (queries × k, ties keep
    the candidate order); ``gains`` are the candidates' relevances (same shape), ``ideal`` each query's judged
    relevances (all of its qrels), for the ideal DCG."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :CUT]
    judged = np.zeros((len(ideal), max([len(rels) for rels in ideal] + [1])))
    for row, rels in enumerate(ideal):
        judged[row, : len(rels)] = rels
    return mrr_and_ndcg(np.take_along_axis(gains, order, axis=1), judged)
