"""The quality gate: apply a model's policy to ``metrics.json`` and explain every verdict.

Plain Python and numpy, no Airflow. ``evaluate_gate(policy, metrics)`` returns the body of
``gate.json``: each criterion with its value, threshold, verdict and a one-line reason.
With no champion only absolute criteria apply, and the result says so.

The paired significance criterion is a percentile bootstrap of (challenger − champion)
macro F1 over the golden set's examples. It is vectorised by noting that resampling n
examples with replacement is a multinomial draw over the distinct (true, challenger,
champion) label triples, so the work grows with the number of distinct triples, not
with resamples × n.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from retrain.config import GatePolicy
from retrain.store import canonical_json

PASS, FAIL, SKIP, REPORT = "pass", "fail", "skipped", "report"


def criterion(name: str, value: Any, threshold: Any, verdict: str, reason: str) -> dict[str, Any]:
    value = float(value) if isinstance(value, (float, np.floating)) else value
    return {"name": name, "value": value, "threshold": threshold, "verdict": verdict, "reason": reason}


def at_least(name: str, value: float, threshold: float, what: str) -> dict[str, Any]:
    ok = value >= threshold
    return criterion(name, round(value, 6), threshold, PASS if ok else FAIL, f"{what} {value:.4g} {'>=' if ok else '<'} {threshold}")


def at_most(name: str, value: float, threshold: float, what: str) -> dict[str, Any]:
    ok = value <= threshold
    return criterion(name, round(value, 6), threshold, PASS if ok else FAIL, f"{what} {value:.2f} {'<=' if ok else '>'} {threshold}")


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
        m: float(macro_f1_from_counts(np.bincount(y[y == p], minlength=n_classes).astype(float), true_full,
                                      np.bincount(p, minlength=n_classes).astype(float)))
        for m, p in (("a", a), ("b", b))
    }
    return {"delta": point["a"] - point["b"], "lower": float(lower), "upper": float(upper), "resamples": resamples, "confidence": confidence}


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


def _per_class(policy: GatePolicy, metrics: dict[str, Any], has_champion: bool) -> list[dict[str, Any]]:
    challenger = metrics["challenger"]["per_class"]
    eligible = {label for label, row in challenger.items() if row["support"] >= policy.min_class_support}
    small = sorted(set(challenger) - eligible)
    note = f"; {len(small)} class(es) under {policy.min_class_support} examples not judged" if small else ""
    out = []
    if not eligible:
        return [criterion("per_class.floor", None, policy.per_class_floor, SKIP, f"no class has {policy.min_class_support}+ examples")]
    worst = min(eligible, key=lambda label: challenger[label]["f1"])
    below = sorted(label for label in eligible if challenger[label]["f1"] < policy.per_class_floor)
    out.append(criterion(
        "per_class.floor", round(challenger[worst]["f1"], 6), policy.per_class_floor, FAIL if below else PASS,
        (f"{len(below)} class(es) below the floor, worst {worst} at {challenger[worst]['f1']:.3f}" if below
         else f"lowest class F1 {challenger[worst]['f1']:.3f} ({worst})") + note,
    ))
    if has_champion:
        champion = metrics["champion"]["per_class"]
        drops = {label: champion[label]["f1"] - challenger[label]["f1"] for label in eligible if label in champion}
        label = max(drops, key=drops.get)
        over = sorted(lab for lab, drop in drops.items() if drop > policy.per_class_max_regression)
        out.append(criterion(
            "per_class.regression", round(drops[label], 6), policy.per_class_max_regression, FAIL if over else PASS,
            (f"{len(over)} class(es) lost more than {policy.per_class_max_regression} F1, worst {label} (-{drops[label]:.3f})" if over
             else f"largest per-class F1 drop {drops[label]:.3f} ({label})") + note,
        ))
    return out


def evaluate_gate(policy: GatePolicy, metrics: dict[str, Any]) -> dict[str, Any]:
    """All criteria for one challenger; ``decision`` is 'pass' only if none failed."""
    challenger, champion = metrics["challenger"], metrics.get("champion")
    has_champion = champion is not None
    results = [
        at_least("sample_size.total", metrics["n_examples"], policy.min_total_examples, "golden examples"),
        *(at_least(f"floor.{m}", challenger[m], t, f"challenger {m}") for m, t in policy.floors.items()),
        at_most("latency.p50_ms", challenger["latency_ms"]["p50"], policy.latency_p50_ms_max, "p50 latency (ms)"),
        at_most("latency.p99_ms", challenger["latency_ms"]["p99"], policy.latency_p99_ms_max, "p99 latency (ms)"),
        *_per_class(policy, metrics, has_champion),
    ]
    if has_champion:
        for m, margin in policy.min_delta.items():
            delta = challenger[m] - champion[m]
            results.append(at_least(f"delta.{m}", delta, margin, f"challenger − champion {m}"))
        paired = metrics["paired"]
        y, a, b = (np.asarray(paired[k], dtype=np.int64) for k in ("y_true", "challenger_pred", "champion_pred"))
        sig = policy.significance
        ci = paired_bootstrap_macro_f1(y, a, b, len(metrics["labels"]), sig.resamples, sig.confidence, sig.seed)
        ok = ci["lower"] >= sig.margin
        results.append(criterion(
            "significance.macro_f1", round(ci["lower"], 6), sig.margin, PASS if ok else FAIL,
            f"{sig.confidence:.0%} paired bootstrap CI of Δ macro F1 [{ci['lower']:+.4f}, {ci['upper']:+.4f}] "
            f"(Δ {ci['delta']:+.4f}, {sig.resamples} resamples); lower bound {'>=' if ok else '<'} margin {sig.margin}",
        ))
        mc = mcnemar_exact(np.asarray(paired["challenger_correct"], bool), np.asarray(paired["champion_correct"], bool))
        results.append(criterion(
            "significance.mcnemar", round(mc["p_value"], 6), None, REPORT,
            f"exact McNemar p={mc['p_value']:.4g}: {mc['only_challenger_correct']} only-challenger vs "
            f"{mc['only_champion_correct']} only-champion correct (reported, not gating)",
        ))
    failed = [r["name"] for r in results if r["verdict"] == FAIL]
    body = {
        "decision": "reject" if failed else "pass",
        "failed": failed,
        "has_champion": has_champion,
        "mode": "full policy against the champion" if has_champion
        else "no champion: only absolute criteria apply (floors, per-class floor, latency, sample size)",
        "champion_version": champion.get("version") if has_champion else None,
        "golden_version": metrics["golden_version"],
        "criteria": results,
        "policy": policy.model_dump(mode="json"),
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
