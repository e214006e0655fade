"""Gate criteria of the embedding_adapter task type.

Applied by ``retrain.gate.evaluate_gate`` after the criteria every task shares (sample size,
``floors`` of the headline metrics, latency):

- ``frozen.<metric>``: the challenger's gain over the frozen encoder it sits on, at least
  ``gate.retrieval.min_delta_vs_frozen[metric]`` (absolute: applies without a champion too);
- against the champion: ``delta.<metric>`` for each ``gate.min_delta`` (a negative margin is
  non-inferiority), and ``significance.<metric>``: the lower bound of a paired percentile
  bootstrap CI over golden queries of mean(challenger − champion) of the per-query metric
  (``gate.retrieval.significance_metric``, default nDCG@10) must clear ``gate.significance.margin``.

Plain Python and numpy, no Airflow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from retrain.config import GatePolicy, RetrievalPolicy
from retrain.gate import FAIL, PASS, at_least, criterion, deltas

METRICS = ("recall_at_1", "recall_at_5", "recall_at_10", "mrr_at_10", "ndcg_at_10")


def paired_bootstrap_mean(a: np.ndarray, b: np.ndarray, resamples: int, confidence: float, seed: int) -> dict[str, float]:
    """Percentile CI of mean(a − b) when the queries are resampled with replacement (pairs kept together).

    Resampling n queries is a multinomial draw of how often each is taken, so a resample's mean
    is weights · d / n; the work is resamples × n, done in chunks to bound memory."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 4_000_000 // max(n, 1))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        means[start : start + size] = rng.multinomial(n, np.full(n, 1.0 / n), size=size) @ d / n
    alpha = (1 - confidence) / 2
    lower, upper = np.quantile(means, [alpha, 1 - alpha])
    return {"delta": float(d.mean()), "lower": float(lower), "upper": float(upper), "resamples": resamples, "confidence": confidence}


def criteria(policy: GatePolicy, metrics: dict[str, Any], has_champion: bool) -> list[dict[str, Any]]:
    """This task type's criteria, in the order gate.json lists them."""
    rule = policy.retrieval or RetrievalPolicy()
    challenger, baseline = metrics["challenger"], metrics["baseline"]
    results = [at_least(f"frozen.{m}", challenger[m] - baseline[m], margin, f"challenger − frozen encoder {m}")
               for m, margin in rule.min_delta_vs_frozen.items()]
    if has_champion:
        results += deltas(policy, challenger, metrics["champion"])
        results.append(significance(policy, rule.significance_metric, metrics["paired"]))
    return results


def significance(policy: GatePolicy, metric: str, paired: dict[str, Any]) -> dict[str, Any]:
    """The paired bootstrap over queries of Δ ``metric`` against the champion: its lower bound must clear the margin."""
    sig = policy.significance
    a, b = np.asarray(paired["challenger"][metric]), np.asarray(paired["champion"][metric])
    ci = paired_bootstrap_mean(a, b, sig.resamples, sig.confidence, sig.seed)
    ok = ci["lower"] >= sig.margin
    better, worse = int(np.sum(a > b)), int(np.sum(a < b))
    return criterion(
        f"significance.{metric}", round(ci["lower"], 6), sig.margin, PASS if ok else FAIL,
        f"{sig.confidence:.0%} paired bootstrap CI over {len(a)} queries of Δ {metric} [{ci['lower']:+.4f}, {ci['upper']:+.4f}] "
        f"(Δ {ci['delta']:+.4f}; {better} queries better, {worse} worse; {sig.resamples} resamples); "
        f"lower bound {'>=' if ok else '<'} margin {sig.margin}",
    )
