"""Shared pieces of the gate tests: a metrics.json of per-query (or per-prompt) figures for a challenger, the
same run's baseline and an optional champion, seeded hit patterns, a gate policy, and criteria by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from retrain.config import GatePolicy

N = 200


def hits(share: float, n: int = N, offset: int = 0) -> np.ndarray:
    """The first ``share`` of n queries (rotated by ``offset``) are hits."""
    return np.roll(np.arange(n) < round(share * n), offset)


def policy(**gate) -> GatePolicy:
    return GatePolicy(min_total_examples=100, **gate)


def by_name(gate: dict) -> dict[str, dict]:
    return {c["name"]: c for c in gate["criteria"]}


def paired_metrics(
    task: str,
    figures: Callable[[np.ndarray], dict[str, np.ndarray]],
    challenger_hits,
    baseline_hits,
    champion_hits=None,
    p99: float = 6.0,
    **fields: Any,
) -> dict:
    """metrics.json as a retrieval-shaped task writes it: each role's block is the mean of its per-query ``figures``
    (with latency; the challenger's p99 is ``p99``), and ``paired`` holds the per-query figures by role."""
    per = {
        "challenger": figures(np.asarray(challenger_hits, bool)),
        "baseline": figures(np.asarray(baseline_hits, bool)),
    }
    if champion_hits is not None:
        per["champion"] = figures(np.asarray(champion_hits, bool))

    def block(per_query: dict[str, np.ndarray], p99: float = 6.0) -> dict:
        return {**{m: float(np.mean(v)) for m, v in per_query.items()}, "latency_ms": {"p50": 3.0, "p99": p99}}

    return {
        "task": task,
        "n_examples": len(challenger_hits),
        "golden_version": "v1",
        **fields,
        "challenger": block(per["challenger"], p99),
        "baseline": block(per["baseline"]),
        "champion": block(per["champion"]) if champion_hits is not None else None,
        "paired": {
            "keys": [f"q{i}" for i in range(len(challenger_hits))],
            **{role: {m: v.tolist() for m, v in f.items()} for role, f in per.items()},
            **({} if champion_hits is not None else {"champion": None}),
        },
    }
