"""The quality gate: apply a model's policy to ``metrics.json`` and explain every verdict.

Plain Python and numpy, no Airflow. ``evaluate_gate(policy, metrics)`` returns the body of
``gate.json``: each criterion with its value, threshold, verdict and a one-line reason.
With no champion only absolute criteria apply, and the result says so. The criteria every
task type shares live here, with the statistics they use; each task type's own criteria
live in ``retrain.tasks.<task>`` (for classifiers: per-class limits, paired significance
on macro F1, the false-escalation rate).

The paired significance criterion is a percentile bootstrap of (challenger − champion)
macro F1 over the golden set's examples. It is vectorised by noting that resampling n
examples with replacement is a multinomial draw over the distinct (true, challenger,
champion) label triples, so the work grows with the number of distinct triples, not
with resamples × n.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from retrain.store import canonical_json
from retrain.tasks import task_module

if TYPE_CHECKING:
    from retrain.config import GatePolicy

DEFAULT_TASK = "text_classification"

PASS, FAIL, SKIP, REPORT = "pass", "fail", "skipped", "report"


def criterion(name: str, value: Any, threshold: Any, verdict: str, reason: str) -> dict[str, Any]:
    value = float(value) if isinstance(value, (float, np.floating)) else value
    return {"name": name, "value": value, "threshold": threshold, "verdict": verdict, "reason": reason}


def at_least(name: str, value: float, threshold: float, what: str) -> dict[str, Any]:
    ok = value >= threshold
    return criterion(
        name, round(value, 6), threshold, PASS if ok else FAIL, f"{what} {value:.4g} {'>=' if ok else '<'} {threshold}"
    )


def at_most(name: str, value: float, threshold: float, what: str, fmt: str = ".2f") -> dict[str, Any]:
    ok = value <= threshold
    return criterion(
        name,
        round(value, 6),
        threshold,
        PASS if ok else FAIL,
        f"{what} {value:{fmt}} {'<=' if ok else '>'} {threshold}",
    )


def macro_f1_from_counts(tp: np.ndarray, true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Macro F1 over the last axis: F1_c = 2·TP/(true + pred), 0 where a class is absent from both."""
    denom = true + pred
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp, dtype=np.float64), where=denom > 0)
    return f1.mean(axis=-1)


def paired_bootstrap_macro_f1(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, n_classes: int, resamples: int, confidence: float, seed: int
) -> dict[str, float]:
    """Percentile CI of macro F1(a) − macro F1(b) under paired resampling of examples."""
    triples, counts = np.unique(np.stack([y, a, b], axis=1), axis=0, return_counts=True)
    n = int(counts.sum())
    true_onehot = np.eye(n_classes)[triples[:, 0]]
    stats = {}
    for model, column in (("a", 1), ("b", 2)):
        pred_onehot = np.eye(n_classes)[triples[:, column]]
        hit = (triples[:, 0] == triples[:, column])[:, None] * true_onehot
        stats[model] = (hit, pred_onehot)
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    chunk = max(1, 4_000_000 // max(len(triples), 1))  # bound memory: chunk × distinct triples weights
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        weights = rng.multinomial(n, counts / n, size=size).astype(np.float64)
        true = weights @ true_onehot
        f1 = {m: macro_f1_from_counts(weights @ hit, true, weights @ pred) for m, (hit, pred) in stats.items()}
        diffs[start : start + size] = f1["a"] - f1["b"]
    alpha = (1 - confidence) / 2
    lower, upper = np.quantile(diffs, [alpha, 1 - alpha])
    true_full = np.bincount(y, minlength=n_classes).astype(float)
    point = {
        m: float(
            macro_f1_from_counts(
                np.bincount(y[y == p], minlength=n_classes).astype(float),
                true_full,
                np.bincount(p, minlength=n_classes).astype(float),
            )
        )
        for m, p in (("a", a), ("b", b))
    }
    return {
        "delta": point["a"] - point["b"],
        "lower": float(lower),
        "upper": float(upper),
        "resamples": resamples,
        "confidence": confidence,
    }


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> dict[str, float]:
    """Exact (binomial) McNemar test on discordant pairs; two-sided p-value."""
    b = int(np.sum(a_correct & ~b_correct))  # only the challenger right
    c = int(np.sum(~a_correct & b_correct))  # only the champion right
    n, k = b + c, min(b, c)
    if n == 0:
        return {"only_challenger_correct": b, "only_champion_correct": c, "p_value": 1.0}
    log_half_n = n * math.log(0.5)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n for i in range(k + 1)]
    top = max(terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in terms)
    return {"only_challenger_correct": b, "only_champion_correct": c, "p_value": min(1.0, 2 * tail)}


def binomial_tail(k: int, n: int, p: float, upper: bool) -> float:
    """P(X >= k) if ``upper`` else P(X <= k), for X ~ Binomial(n, p); exact, summed in log space."""
    if (upper and k <= 0) or (not upper and k >= n):
        return 1.0
    if (upper and k > n) or (not upper and k < 0):
        return 0.0
    if p <= 0.0 or p >= 1.0:  # X is constant: 0 or n
        x = 0 if p <= 0.0 else n
        return float(x >= k if upper else x <= k)
    i = np.arange(1, n + 1)
    log_choose = np.concatenate([[0.0], np.cumsum(np.log(n - i + 1) - np.log(i))])
    terms = log_choose + np.arange(n + 1) * math.log(p) + (n - np.arange(n + 1)) * math.log1p(-p)
    terms = terms[k:] if upper else terms[: k + 1]
    top = terms.max()
    return float(min(1.0, math.exp(top) * np.exp(terms - top).sum()))


def tarone_family(min_p: np.ndarray, alpha: float) -> int:
    """Tarone's family size: the smallest k with at most k hypotheses whose least achievable p-value is <= alpha/k.

    A discrete test on few observations (a class with 3 discordant pairs cannot reach p < 0.125)
    can never be rejected, so it need not share the error budget (Tarone 1990).
    """
    ranked = np.sort(np.asarray(min_p, dtype=np.float64))
    ks = np.arange(1, len(ranked) + 1)
    if not len(ks):
        return 1
    testable = np.searchsorted(ranked, alpha / ks * (1 + 1e-12), side="right")
    return int(ks[np.argmax(testable <= ks)])


def holm_tarone(p: np.ndarray, min_p: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Step-down Tarone–Holm (Hommel & Krummenauer 1998): family-wise error rate <= alpha for discrete tests.

    Hypotheses are taken in increasing p; at each step the Tarone family size K of those not yet
    rejected sets the level alpha/K. Returns which are rejected and the family size each was
    compared under (for those never reached, the size at the step that stopped).
    """
    p, min_p = np.asarray(p, dtype=np.float64), np.asarray(min_p, dtype=np.float64)
    rejected, family = np.zeros(len(p), bool), np.zeros(len(p), np.int64)
    for i in np.argsort(p, kind="stable"):
        k = tarone_family(min_p[~rejected], alpha)
        if p[i] > alpha / k * (1 + 1e-12):  # tolerance: a p-value equal to the level is rejected
            family[np.flatnonzero(~rejected)] = k
            break
        rejected[i], family[i] = True, k
    return rejected, family


def one_vs_rest_discordance(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per class c, over the binary decision "is it c?": examples only ``a`` decides right, and only ``b``.

    The decisions differ only where a and b predict different classes, and then only for those
    two classes; the difference (only-b − only-a) is a's extra false positives plus false negatives
    on c, which is what moves its F1.
    """
    diff = a != b
    y, a, b = y[diff], a[diff], b[diff]
    only_a = np.bincount(a[y == a], minlength=n_classes) + np.bincount(b[y != b], minlength=n_classes)
    only_b = np.bincount(a[y != a], minlength=n_classes) + np.bincount(b[y == b], minlength=n_classes)
    return only_a, only_b


def fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def deltas(policy: GatePolicy, challenger: dict[str, Any], champion: dict[str, Any]) -> list[dict[str, Any]]:
    """challenger − champion of each headline metric in ``policy.min_delta``; a negative margin allows
    non-inferiority."""
    return [
        at_least(f"delta.{m}", challenger[m] - champion[m], margin, f"challenger − champion {m}")
        for m, margin in policy.min_delta.items()
    ]


def evaluate_gate(policy: GatePolicy, metrics: dict[str, Any], task: str | None = None) -> dict[str, Any]:
    """All criteria for one challenger; ``decision`` is 'pass' only if none failed.

    The criteria every task shares (sample size, floors, latency) are applied here; the task
    type's own (``retrain.tasks.<task>.criteria``) follow. ``task`` defaults to the one
    ``metrics.json`` records, and must agree with it."""
    recorded = metrics.get("task", DEFAULT_TASK)  # metrics written before task types were recorded are classification
    if task is not None and task != recorded:
        raise ValueError(f"metrics.json was written for task {recorded!r}, but the model's config says {task!r}")
    challenger, champion = metrics["challenger"], metrics.get("champion")
    has_champion = champion is not None
    results = [
        at_least("sample_size.total", metrics["n_examples"], policy.min_total_examples, "golden examples"),
        *(at_least(f"floor.{m}", challenger[m], t, f"challenger {m}") for m, t in policy.floors.items()),
        at_most("latency.p50_ms", challenger["latency_ms"]["p50"], policy.latency_p50_ms_max, "p50 latency (ms)"),
        at_most("latency.p99_ms", challenger["latency_ms"]["p99"], policy.latency_p99_ms_max, "p99 latency (ms)"),
        *task_module("gate", recorded).criteria(policy, metrics, has_champion),
    ]
    failed = [r["name"] for r in results if r["verdict"] == FAIL]
    body = {
        "decision": "reject" if failed else "pass",
        "failed": failed,
        "has_champion": has_champion,
        "mode": "full policy against the champion"
        if has_champion
        else "no champion: only absolute criteria apply (floors, per-class floor, latency, sample size)",
        "champion_version": champion.get("version") if has_champion else None,
        "golden_version": metrics["golden_version"],
        "criteria": results,
        "policy": policy.model_dump(mode="json", exclude=policy.unset_optional_sections()),
    }
    body["digest"] = hashlib.sha256(canonical_json(body)).hexdigest()
    return body


def format_table(gate: dict[str, Any]) -> str:
    """The gate as a fixed-width table for logs, the approval form and the CLI."""
    lines = [f"{'criterion':<24} {'value':>10} {'threshold':>10}  verdict  reason"]
    for r in gate["criteria"]:
        value = "-" if r["value"] is None else f"{r['value']:.4g}" if isinstance(r["value"], float) else str(r["value"])
        threshold = "-" if r["threshold"] is None else str(r["threshold"])
        lines.append(f"{r['name']:<24} {value:>10} {threshold:>10}  {r['verdict']:<7}  {r['reason']}")
    lines.append(f"decision: {gate['decision'].upper()} ({gate['mode']})")
    return "\n".join(lines)
