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
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        k = tarone_family(min_p[~rejected], alpha)
        if p[i] > alpha / k * (1 + 1e-12):  # tolerance: a p-value equal to the level is rejected
            family[np.flatnonzero(~rejected)] = k
            break
        rejected[i], family[i] = True, k
    return rejected, family


def one_vs_rest_discordance(y: np.ndarray, a: np.ndarray, b: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
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


def _fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def _per_class(policy: GatePolicy, metrics: dict[str, Any], has_champion: bool) -> list[dict[str, Any]]:
    """Per-class floor and regression: a class fails only if it is past the limit and the gap is beyond sampling noise.

    Each family (floor, regression) is an exact one-sided test per judged class, corrected with
    step-down Tarone–Holm at ``policy.per_class_alpha`` (family-wise), so an equivalent challenger
    is rarely blocked however many classes there are; bench/gate_oc.py measures the error rates.
    """
    labels = list(metrics["labels"])
    challenger = metrics["challenger"]["per_class"]
    judged = [i for i, label in enumerate(labels) if challenger[label]["support"] >= policy.min_class_support]
    small = len(labels) - len(judged)
    note = f"; {small} class(es) under {policy.min_class_support} examples not judged" if small else ""
    if not judged:
        return [criterion("per_class.floor", None, policy.per_class_floor, SKIP, f"no class has {policy.min_class_support}+ examples")]
    alpha = policy.per_class_alpha
    paired = metrics["paired"]
    y, a = (np.asarray(paired[k], dtype=np.int64) for k in ("y_true", "challenger_pred"))
    n_classes = len(labels)
    f1 = np.array([challenger[labels[i]]["f1"] for i in judged])
    out = [_floor(policy, labels, judged, f1, y, a, n_classes, note)]
    if has_champion:
        b = np.asarray(paired["champion_pred"], dtype=np.int64)
        champion = metrics["champion"]["per_class"]
        drop = np.array([champion[labels[i]]["f1"] for i in judged]) - f1
        only_a, only_b = (counts[judged] for counts in one_vs_rest_discordance(y, a, b, n_classes))
        discordant = only_a + only_b
        p = np.array([binomial_tail(int(k), int(n), 0.5, upper=True) for k, n in zip(only_b, discordant)])
        min_p = np.power(0.5, discordant.astype(np.float64))
        significant, family = holm_tarone(p, min_p, alpha)
        material = drop > policy.per_class_max_regression
        failing = np.flatnonzero(material & significant)
        worst = int(failing[np.argmin(p[failing])]) if len(failing) else int(np.argmax(drop))
        in_noise = int(np.sum(material & ~significant))

        def evidence(j: int) -> str:
            return (f"{labels[judged[j]]}: F1 {-drop[j]:+.3f}, one-vs-rest McNemar {int(only_a[j])} vs {int(only_b[j])} "
                    f"(only challenger vs only champion right), p={_fmt_p(p[j])} "
                    f"{'<=' if significant[j] else '>'} {alpha:g}/{family[j]} (Holm–Tarone, {family[j]} of {len(judged)} classes testable)")

        if len(failing):
            reason = (f"{len(failing)} class(es) lost more than {policy.per_class_max_regression} F1 beyond noise, worst "
                      + evidence(worst) + (f"; {in_noise} more past the limit within noise" if in_noise else ""))
        else:
            reason = (f"no class lost more than {policy.per_class_max_regression} F1 beyond noise; largest drop "
                      + evidence(worst) + (f"; {in_noise} class(es) past the limit within noise" if in_noise else ""))
        out.append(criterion("per_class.regression", round(float(drop[worst]), 6), policy.per_class_max_regression,
                             FAIL if len(failing) else PASS, reason + note))
    return out


def _floor(policy: GatePolicy, labels: list[str], judged: list[int], f1: np.ndarray, y: np.ndarray, a: np.ndarray,
           n_classes: int, note: str) -> dict[str, Any]:
    """Per-class floor: F1 below the floor, and an exact binomial test that its true F1 is below it too.

    F1 = 2J/(1+J), where J = TP/(TP+FP+FN) is the share of the examples that concern the class
    (truly it, or predicted as it) that are right; so F1 < floor exactly when J < floor/(2−floor),
    and given those n examples, TP is binomial in J.
    """
    floor, alpha = policy.per_class_floor, policy.per_class_alpha
    tp = np.bincount(y[y == a], minlength=n_classes)[judged]
    concern = (np.bincount(y, minlength=n_classes) + np.bincount(a, minlength=n_classes))[judged] - tp
    j0 = floor / (2 - floor)
    p = np.array([binomial_tail(int(k), int(n), j0, upper=False) for k, n in zip(tp, concern)])
    min_p = np.power(1 - j0, concern.astype(np.float64))
    significant, family = holm_tarone(p, min_p, alpha)
    below = f1 < floor
    failing = np.flatnonzero(below & significant)
    worst = int(failing[np.argmin(p[failing])]) if len(failing) else int(np.argmin(f1))
    in_noise = int(np.sum(below & ~significant))
    evidence = (f"{labels[judged[worst]]} at {f1[worst]:.3f}, TP {int(tp[worst])} of {int(concern[worst])} examples "
                f"concerning it, exact binomial p={_fmt_p(p[worst])} {'<=' if significant[worst] else '>'} "
                f"{alpha:g}/{family[worst]} (Holm–Tarone)")
    if len(failing):
        reason = f"{len(failing)} class(es) below the floor beyond noise, worst " + evidence
    else:
        reason = "no class below the floor beyond noise; lowest " + evidence
    reason += f"; {in_noise} class(es) under the floor within noise" if in_noise else ""
    return criterion("per_class.floor", round(float(f1[worst]), 6), floor, FAIL if len(failing) else PASS, reason + note)


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
