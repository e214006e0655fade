"""Gate criteria of the text_classification task type (intent, sentiment).

Applied by ``retrain.gate.evaluate_gate`` after the criteria every task shares (sample size,
floors, latency):

- per-class floor and regression, each beyond sampling noise (exact tests, step-down
  Tarone–Holm over the judged classes);
- against the champion: the change of each headline metric, and the lower bound of a paired
  bootstrap CI on Δ macro F1; the exact McNemar test is reported beside it;
- where the config names an escalation label (``evaluation.escalation_label``) and a policy
  (``gate.false_escalation``): the false-escalation rate, the share of examples whose true label
  is not the escalation label that the model predicts as it, under an absolute ceiling, and its
  ratio to the champion's rate with a paired one-sided exact test (see ``false_escalation``).

Plain Python and numpy, no Airflow.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from retrain.gate import (
    FAIL,
    PASS,
    REPORT,
    SKIP,
    binomial_tail,
    criterion,
    deltas,
    fmt_p,
    holm_tarone,
    mcnemar_exact,
    one_vs_rest_discordance,
    paired_bootstrap_macro_f1,
)
from retrain.schema import Strict

if TYPE_CHECKING:
    from retrain.config import GatePolicy

METRICS = ("macro_f1", "accuracy")
"""Headline metrics of a classifier: what ``gate.floors`` and ``gate.min_delta`` may name."""


class FalseEscalationPolicy(Strict):
    """The false-escalation rate (examples not of the escalation label predicted as it): a ceiling, and its ratio to
    the champion's."""

    max_rate: float = Field(ge=0, le=1, description="Ceiling on the challenger's false-escalation rate.")
    max_ratio: float = Field(
        1.15, ge=1, description="The challenger's rate may be at most this times the champion's, beyond noise."
    )
    alpha: float = Field(
        0.05, gt=0, lt=1, description="Level of the paired one-sided exact test that the ratio is exceeded."
    )

    def config_problem(self, config) -> str | None:
        """What the rest of the model config lacks for this section, or None."""
        if config.evaluation.escalation_label is None:
            return "needs evaluation.escalation_label: the label whose prediction escalates"
        return None


POLICY_SECTIONS = {"false_escalation": FalseEscalationPolicy}
"""The gate policy section(s) this task type adds to ``gate:`` (``retrain.config.GatePolicy``), by name."""


def criteria(policy: GatePolicy, metrics: dict[str, Any], has_champion: bool) -> list[dict[str, Any]]:
    """This task type's criteria, in the order gate.json lists them."""
    results = [*_per_class(policy, metrics, has_champion), *false_escalation(policy, metrics, has_champion)]
    if has_champion:
        results += deltas(policy, metrics["challenger"], metrics["champion"])
        results += _significance(policy, metrics)
    return results


def _significance(policy: GatePolicy, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Paired bootstrap CI of Δ macro F1 (gating) and the exact McNemar test on correctness (reported)."""
    paired = metrics["paired"]
    y, a, b = (np.asarray(paired[k], dtype=np.int64) for k in ("y_true", "challenger_pred", "champion_pred"))
    sig = policy.significance
    ci = paired_bootstrap_macro_f1(y, a, b, len(metrics["labels"]), sig.resamples, sig.confidence, sig.seed)
    ok = ci["lower"] >= sig.margin
    mc = mcnemar_exact(np.asarray(paired["challenger_correct"], bool), np.asarray(paired["champion_correct"], bool))
    return [
        criterion(
            "significance.macro_f1",
            round(ci["lower"], 6),
            sig.margin,
            PASS if ok else FAIL,
            f"{sig.confidence:.0%} paired bootstrap CI of Δ macro F1 [{ci['lower']:+.4f}, {ci['upper']:+.4f}] "
            f"(Δ {ci['delta']:+.4f}, {sig.resamples} resamples); lower bound {'>=' if ok else '<'} margin {sig.margin}",
        ),
        criterion(
            "significance.mcnemar",
            round(mc["p_value"], 6),
            None,
            REPORT,
            f"exact McNemar p={mc['p_value']:.4g}: {mc['only_challenger_correct']} only-challenger vs "
            f"{mc['only_champion_correct']} only-champion correct (reported, not gating)",
        ),
    ]


def escalation_counts(y: np.ndarray, pred: np.ndarray, escalation: int) -> tuple[int, int]:
    """(false escalations, examples whose true label is not the escalation label)."""
    calm = y != escalation
    return int(np.sum(calm & (pred == escalation))), int(np.sum(calm))


def ratio_margin_test(only_a: int, only_b: int, both: int, ratio: float) -> float:
    """One-sided exact p-value of H0: rate(a) <= ratio × rate(b), from paired escalations on the same examples.

    ``only_a``: examples a escalates and b does not; ``only_b`` the reverse; ``both``: both do.
    rate(a) − ratio·rate(b) is proportional to (both + only_a) − ratio·(both + only_b). Given the
    discordant count n = only_a + only_b (and ``both``), only_a is binomial, and at the null's
    boundary its success probability is theta0 = (both·(ratio − 1) + ratio·n) / (n·(1 + ratio)). The
    p-value is P(X >= only_a) for X ~ Binomial(n, theta0). With ratio 1 this is the exact one-sided
    McNemar test; with no discordant pair there is no evidence either way (p = 1).
    """
    n = only_a + only_b
    if n == 0:
        return 1.0
    theta0 = (both * (ratio - 1) + ratio * n) / (n * (1 + ratio))
    return binomial_tail(only_a, n, min(1.0, theta0), upper=True)


def false_escalation(policy: GatePolicy, metrics: dict[str, Any], has_champion: bool) -> list[dict[str, Any]]:
    """Ceiling on the challenger's false-escalation rate; against the champion, its ratio beyond noise.

    The ratio criterion fails only when the challenger's rate is more than ``max_ratio`` times the
    champion's AND the paired one-sided exact test on the non-escalation examples rejects
    "rate(challenger) <= max_ratio × rate(champion)" at ``alpha``; a ratio past the limit within
    noise passes, and its reason says so.
    """
    rule = policy.false_escalation
    if rule is None:
        return []
    label = metrics.get("escalation_label")
    if label is None:
        return [
            criterion(
                "false_escalation.rate",
                None,
                rule.max_rate,
                FAIL,
                "metrics.json has no false-escalation figures: evaluation.escalation_label is not set",
            )
        ]
    paired = metrics["paired"]
    escalation = list(metrics["labels"]).index(label)
    y, a = (np.asarray(paired[k], dtype=np.int64) for k in ("y_true", "challenger_pred"))
    fp_a, calm = escalation_counts(y, a, escalation)
    if calm == 0:
        return [criterion("false_escalation.rate", None, rule.max_rate, SKIP, f"no golden example outside {label!r}")]
    rate_a = fp_a / calm
    ok = rate_a <= rule.max_rate
    out = [
        criterion(
            "false_escalation.rate",
            round(rate_a, 6),
            rule.max_rate,
            PASS if ok else FAIL,
            f"false-escalation rate {rate_a:.4f} ({fp_a} of {calm} examples not {label!r} predicted {label!r}) "
            f"{'<=' if ok else '>'} {rule.max_rate}",
        )
    ]
    if not has_champion:
        return out
    b = np.asarray(paired["champion_pred"], dtype=np.int64)
    fp_b, _ = escalation_counts(y, b, escalation)
    rate_b = fp_b / calm
    calm_mask = y != escalation
    esc_a, esc_b = calm_mask & (a == escalation), calm_mask & (b == escalation)
    only_a, only_b, both = int(np.sum(esc_a & ~esc_b)), int(np.sum(~esc_a & esc_b)), int(np.sum(esc_a & esc_b))
    p = ratio_margin_test(only_a, only_b, both, rule.max_ratio)
    ratio = rate_a / rate_b if rate_b else (1.0 if rate_a == 0 else math.inf)
    past = rate_a > rule.max_ratio * rate_b
    significant = p <= rule.alpha
    evidence = (
        f"challenger {rate_a:.4f} vs champion {rate_b:.4f} ({fp_a} vs {fp_b} of {calm}); paired on those examples "
        f"{only_a} only-challenger vs {only_b} only-champion escalations ({both} both), one-sided exact test of "
        f"rate <= {rule.max_ratio} x champion's: p={fmt_p(p)} {'<=' if significant else '>'} {rule.alpha}"
    )
    if past and significant:
        verdict, head = FAIL, f"false-escalation rate above {rule.max_ratio} x the champion's beyond noise: "
    elif past:
        verdict, head = PASS, f"false-escalation rate above {rule.max_ratio} x the champion's, but within noise: "
    else:
        verdict, head = PASS, f"false-escalation rate within {rule.max_ratio} x the champion's: "
    value = None if math.isinf(ratio) else round(ratio, 6)
    out.append(criterion("false_escalation.ratio", value, rule.max_ratio, verdict, head + evidence))
    return out


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
        return [
            criterion(
                "per_class.floor",
                None,
                policy.per_class_floor,
                SKIP,
                f"no class has {policy.min_class_support}+ examples",
            )
        ]
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
        p = np.array([binomial_tail(int(k), int(n), 0.5, upper=True) for k, n in zip(only_b, discordant, strict=True)])
        min_p = np.power(0.5, discordant.astype(np.float64))
        significant, family = holm_tarone(p, min_p, alpha)
        material = drop > policy.per_class_max_regression
        failing = np.flatnonzero(material & significant)
        worst = int(failing[np.argmin(p[failing])]) if len(failing) else int(np.argmax(drop))
        in_noise = int(np.sum(material & ~significant))

        def evidence(j: int) -> str:
            return (
                f"{labels[judged[j]]}: F1 {-drop[j]:+.3f}, one-vs-rest McNemar {int(only_a[j])} vs {int(only_b[j])} "
                f"(only challenger vs only champion right), p={fmt_p(p[j])} "
                f"{'<=' if significant[j] else '>'} {alpha:g}/{family[j]} (Holm–Tarone, {family[j]} of {len(judged)} "
                "classes testable)"
            )

        if len(failing):
            reason = (
                f"{len(failing)} class(es) lost more than {policy.per_class_max_regression} F1 beyond noise, worst "
                + evidence(worst)
                + (f"; {in_noise} more past the limit within noise" if in_noise else "")
            )
        else:
            reason = (
                f"no class lost more than {policy.per_class_max_regression} F1 beyond noise; largest drop "
                + evidence(worst)
                + (f"; {in_noise} class(es) past the limit within noise" if in_noise else "")
            )
        out.append(
            criterion(
                "per_class.regression",
                round(float(drop[worst]), 6),
                policy.per_class_max_regression,
                FAIL if len(failing) else PASS,
                reason + note,
            )
        )
    return out


def _floor(
    policy: GatePolicy,
    labels: list[str],
    judged: list[int],
    f1: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    n_classes: int,
    note: str,
) -> dict[str, Any]:
    """Per-class floor: F1 below the floor, and an exact binomial test that its true F1 is below it too.

    F1 = 2J/(1+J), where J = TP/(TP+FP+FN) is the share of the examples that concern the class
    (truly it, or predicted as it) that are right; so F1 < floor exactly when J < floor/(2−floor),
    and given those n examples, TP is binomial in J.
    """
    floor, alpha = policy.per_class_floor, policy.per_class_alpha
    tp = np.bincount(y[y == a], minlength=n_classes)[judged]
    concern = (np.bincount(y, minlength=n_classes) + np.bincount(a, minlength=n_classes))[judged] - tp
    j0 = floor / (2 - floor)
    p = np.array([binomial_tail(int(k), int(n), j0, upper=False) for k, n in zip(tp, concern, strict=True)])
    min_p = np.power(1 - j0, concern.astype(np.float64))
    significant, family = holm_tarone(p, min_p, alpha)
    below = f1 < floor
    failing = np.flatnonzero(below & significant)
    worst = int(failing[np.argmin(p[failing])]) if len(failing) else int(np.argmin(f1))
    in_noise = int(np.sum(below & ~significant))
    evidence = (
        f"{labels[judged[worst]]} at {f1[worst]:.3f}, TP {int(tp[worst])} of {int(concern[worst])} examples "
        f"concerning it, exact binomial p={fmt_p(p[worst])} {'<=' if significant[worst] else '>'} "
        f"{alpha:g}/{family[worst]} (Holm–Tarone)"
    )
    if len(failing):
        reason = f"{len(failing)} class(es) below the floor beyond noise, worst " + evidence
    else:
        reason = "no class below the floor beyond noise; lowest " + evidence
    reason += f"; {in_noise} class(es) under the floor within noise" if in_noise else ""
    return criterion(
        "per_class.floor", round(float(f1[worst]), 6), floor, FAIL if len(failing) else PASS, reason + note
    )


def golden_files(config, source):
    """The files of a golden version published from ``source`` (a CSV of text and label), and its example count."""
    from retrain.golden import classification_golden

    return classification_golden(config, source)
