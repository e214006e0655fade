"""The gate policy: every criterion passes and fails on purpose; statistics match references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from retrain.config import GatePolicy
from retrain.gate import (
    binomial_tail,
    evaluate_gate,
    holm_tarone,
    mcnemar_exact,
    one_vs_rest_discordance,
    paired_bootstrap_macro_f1,
    tarone_family,
)

LABELS = ["a", "b", "c"]


def block(y: np.ndarray, pred: np.ndarray, p50: float = 5.0, p99: float = 20.0) -> dict:
    per_class = {}
    for i, label in enumerate(LABELS):
        tp = int(np.sum((y == i) & (pred == i)))
        precision = tp / max(1, np.sum(pred == i))
        recall = tp / max(1, np.sum(y == i))
        f1 = 2 * tp / max(1, np.sum(pred == i) + np.sum(y == i))
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": int(np.sum(y == i))}
    return {
        "macro_f1": float(np.mean([row["f1"] for row in per_class.values()])),
        "accuracy": float(np.mean(y == pred)),
        "per_class": per_class,
        "latency_ms": {"p50": p50, "p99": p99},
        "version": 1,
    }


def metrics(y, challenger, champion=None, **latency) -> dict:
    y, challenger = np.asarray(y), np.asarray(challenger)
    paired = {
        "y_true": y.tolist(),
        "challenger_pred": challenger.tolist(),
        "challenger_correct": (y == challenger).astype(int).tolist(),
    }
    if champion is not None:
        champion = np.asarray(champion)
        paired.update({"champion_pred": champion.tolist(), "champion_correct": (y == champion).astype(int).tolist()})
    return {
        "golden_version": "v1",
        "n_examples": len(y),
        "labels": LABELS,
        "challenger": block(y, challenger, **latency),
        "champion": None if champion is None else block(y, champion),
        "paired": paired,
    }


def flip(y: np.ndarray, fraction: float, seed: int, only_class: int | None = None) -> np.ndarray:
    """Predictions equal to y except a seeded fraction of examples (optionally of one class) made wrong."""
    rng = np.random.default_rng(seed)
    pred = y.copy()
    candidates = np.flatnonzero(y == only_class) if only_class is not None else np.arange(len(y))
    wrong = rng.choice(candidates, size=int(len(candidates) * fraction), replace=False)
    pred[wrong] = (y[wrong] + 1) % len(LABELS)
    return pred


def fix(y: np.ndarray, pred: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A better model: the same predictions with a seeded fraction of their errors corrected."""
    rng = np.random.default_rng(seed)
    better = pred.copy()
    wrong = np.flatnonzero(pred != y)
    fixed = rng.choice(wrong, size=int(len(wrong) * fraction), replace=False)
    better[fixed] = y[fixed]
    return better


Y = np.repeat(np.arange(3), 200)
CHAMPION = flip(Y, 0.08, 2)
POLICY = GatePolicy(
    min_total_examples=300,
    min_class_support=50,
    floors={"macro_f1": 0.8, "accuracy": 0.8},
    min_delta={"macro_f1": -0.02},
    per_class_floor=0.6,
    per_class_max_regression=0.1,
    latency_p50_ms_max=10,
    latency_p99_ms_max=50,
)


def verdicts(gate: dict) -> dict[str, str]:
    return {c["name"]: c["verdict"] for c in gate["criteria"]}


def test_good_challenger_passes_every_criterion():
    gate = evaluate_gate(POLICY, metrics(Y, fix(Y, CHAMPION, 0.4, 1), CHAMPION))
    assert gate["decision"] == "pass", gate["criteria"]
    assert set(verdicts(gate).values()) == {"pass", "report"}
    for c in gate["criteria"]:
        assert c["reason"] and "\n" not in c["reason"]
    assert len(gate["digest"]) == 64


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("floor.macro_f1", lambda: metrics(Y, flip(Y, 0.3, 1))),
        ("floor.accuracy", lambda: metrics(Y, flip(Y, 0.3, 1))),
        ("per_class.floor", lambda: metrics(Y, flip(Y, 0.65, 1, only_class=2))),
        ("latency.p50_ms", lambda: metrics(Y, flip(Y, 0.05, 1), p50=11.0)),
        ("latency.p99_ms", lambda: metrics(Y, flip(Y, 0.05, 1), p99=51.0)),
        ("delta.macro_f1", lambda: metrics(Y, flip(Y, 0.15, 1), flip(Y, 0.05, 2))),
        ("per_class.regression", lambda: metrics(Y, flip(Y, 0.25, 1, only_class=0), flip(Y, 0.02, 2))),
        ("significance.macro_f1", lambda: metrics(Y, flip(Y, 0.12, 1), flip(Y, 0.05, 2))),
    ],
)
def test_each_criterion_fails_on_purpose(name, make):
    gate = evaluate_gate(POLICY, make())
    assert verdicts(gate)[name] == "fail"
    assert gate["decision"] == "reject" and name in gate["failed"]


def test_sample_size_fails_on_a_small_golden_set():
    small = np.repeat(np.arange(3), 60)
    gate = evaluate_gate(POLICY, metrics(small, small))
    assert verdicts(gate)["sample_size.total"] == "fail"


def test_ties_pass():
    """Exactly at a floor, a ceiling or a margin passes (>= and <=)."""
    y = np.repeat(np.arange(3), 100)
    challenger = flip(y, 0.1, 1)
    m = metrics(y, challenger, challenger, p50=10.0, p99=50.0)
    policy = POLICY.model_copy(
        update={
            "floors": {"accuracy": m["challenger"]["accuracy"]},
            "min_delta": {"macro_f1": 0.0},
            "min_total_examples": 300,
        }
    )
    gate = evaluate_gate(policy, m)
    v = verdicts(gate)
    assert v["floor.accuracy"] == v["delta.macro_f1"] == v["latency.p50_ms"] == v["latency.p99_ms"] == "pass"
    # identical predictions: every resample's difference is exactly 0, so the lower bound ties the 0 margin
    tied = evaluate_gate(
        policy.model_copy(update={"significance": policy.significance.model_copy(update={"margin": 0.0})}), m
    )
    assert verdicts(tied)["significance.macro_f1"] == "pass"


def test_no_champion_applies_only_absolute_criteria():
    gate = evaluate_gate(POLICY, metrics(Y, flip(Y, 0.05, 1)))
    names = set(verdicts(gate))
    assert gate["has_champion"] is False and "only absolute criteria" in gate["mode"]
    assert not any(n.startswith(("delta.", "significance.")) or n == "per_class.regression" for n in names)
    assert {"floor.macro_f1", "per_class.floor", "latency.p99_ms", "sample_size.total"} <= names


def test_tiny_classes_are_not_judged_per_class():
    y = np.concatenate([np.repeat([0, 1], 200), np.full(5, 2)])  # class c has 5 examples
    challenger = y.copy()
    challenger[y == 2] = 0  # every tiny-class example wrong: F1(c) = 0
    gate = evaluate_gate(POLICY.model_copy(update={"floors": {}}), metrics(y, challenger, y))
    floor = next(c for c in gate["criteria"] if c["name"] == "per_class.floor")
    assert floor["verdict"] == "pass" and "1 class(es) under 50 examples not judged" in floor["reason"]
    regression = next(c for c in gate["criteria"] if c["name"] == "per_class.regression")
    assert regression["verdict"] == "pass"


def slow_bootstrap(y, a, b, resamples, confidence, seed):
    """Reference: resample example indices one resample at a time, macro F1 by explicit loops."""
    rng = np.random.default_rng(seed)
    n, diffs = len(y), []

    def macro_f1(yy, pp):
        scores = []
        for c in range(3):
            tp = sum(1 for t, p in zip(yy, pp, strict=True) if t == c and p == c)
            denom = sum(1 for t in yy if t == c) + sum(1 for p in pp if p == c)
            scores.append(2 * tp / denom if denom else 0.0)
        return sum(scores) / 3

    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        diffs.append(macro_f1(y[idx], a[idx]) - macro_f1(y[idx], b[idx]))
    alpha = (1 - confidence) / 2
    return np.quantile(diffs, [alpha, 1 - alpha])


def test_bootstrap_matches_a_slow_reference():
    y = np.repeat(np.arange(3), 100)
    a, b = flip(y, 0.10, 3), flip(y, 0.16, 4)
    fast = paired_bootstrap_macro_f1(y, a, b, 3, 2000, 0.95, seed=11)
    lower, upper = slow_bootstrap(y, a, b, 1000, 0.95, seed=12)
    assert fast["lower"] < fast["delta"] < fast["upper"]
    assert abs(fast["lower"] - lower) < 0.012 and abs(fast["upper"] - upper) < 0.012
    again = paired_bootstrap_macro_f1(y, a, b, 3, 2000, 0.95, seed=11)
    assert again == fast  # seeded: the same verdict every time


@pytest.mark.parametrize(("b", "c"), [(0, 0), (3, 0), (10, 12), (40, 15), (1200, 1100), (5, 60)])
def test_mcnemar_matches_scipy_binomtest(b, c):
    a_correct = np.array([True] * b + [False] * c + [True] * 7)
    b_correct = np.array([False] * b + [True] * c + [True] * 7)
    result = mcnemar_exact(a_correct, b_correct)
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert result["p_value"] == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert (result["only_challenger_correct"], result["only_champion_correct"]) == (b, c)


def criterion_of(gate: dict, name: str) -> dict:
    return next(c for c in gate["criteria"] if c["name"] == name)


def test_per_class_regression_within_noise_passes():
    """A 20-example class losing 4 examples is past the 0.10 limit, but 0 vs 4 discordant pairs is noise (p = 1/16)."""
    y = np.concatenate([np.repeat([0, 1], 200), np.full(20, 2)])
    champion = y.copy()
    challenger = y.copy()
    challenger[np.flatnonzero(y == 2)[:4]] = 0
    m = metrics(y, challenger, champion)
    drop = m["champion"]["per_class"]["c"]["f1"] - m["challenger"]["per_class"]["c"]["f1"]
    assert drop > POLICY.per_class_max_regression
    gate = evaluate_gate(POLICY.model_copy(update={"min_class_support": 20, "floors": {}, "min_delta": {}}), m)
    regression = criterion_of(gate, "per_class.regression")
    assert regression["verdict"] == "pass", regression
    assert regression["value"] == pytest.approx(drop, abs=1e-6)
    assert "0 vs 4" in regression["reason"] and "1 class(es) past the limit within noise" in regression["reason"]


def test_per_class_regression_significant_but_small_passes():
    """A certain but small loss (0.05 F1 on 200 examples) is not material: it passes."""
    challenger = flip(Y, 0.10, 1, only_class=0)
    gate = evaluate_gate(POLICY, metrics(Y, challenger, Y))
    regression = criterion_of(gate, "per_class.regression")
    assert 0 < regression["value"] < POLICY.per_class_max_regression
    assert regression["verdict"] == "pass" and "<= 0.05/" in regression["reason"]


def test_per_class_regression_failure_names_class_and_evidence():
    gate = evaluate_gate(POLICY, metrics(Y, flip(Y, 0.25, 1, only_class=0), Y))
    regression = criterion_of(gate, "per_class.regression")
    assert regression["verdict"] == "fail"
    reason = regression["reason"]
    # a's errors become b's false positives, so b's F1 drops too
    assert reason.startswith("2 class(es) lost more than 0.1 F1 beyond noise, worst a:")
    assert "one-vs-rest McNemar 0 vs 50" in reason and "Holm–Tarone" in reason and "\n" not in reason


def test_per_class_alpha_sets_the_bar():
    """The same evidence fails at a lenient level and passes at a strict one."""
    y = np.concatenate([np.repeat([0, 1], 200), np.full(20, 2)])
    challenger = y.copy()
    challenger[np.flatnonzero(y == 2)[:6]] = 0  # 0 vs 6: p = 1/64
    m = metrics(y, challenger, y)
    policy = POLICY.model_copy(update={"min_class_support": 20, "floors": {}, "min_delta": {}})
    lenient = evaluate_gate(policy.model_copy(update={"per_class_alpha": 0.05}), m)
    strict = evaluate_gate(policy.model_copy(update={"per_class_alpha": 0.01}), m)
    assert criterion_of(lenient, "per_class.regression")["verdict"] == "fail"
    assert criterion_of(strict, "per_class.regression")["verdict"] == "pass"


def test_per_class_floor_within_noise_passes():
    """A 20-example class just under the floor is not shown to be under it."""
    y = np.concatenate([np.repeat([0, 1], 200), np.full(20, 2)])
    challenger = y.copy()
    challenger[np.flatnonzero(y == 2)[:11]] = 0  # recall 9/20: F1 = 18/29 = 0.62 < 0.65
    m = metrics(y, challenger)
    policy = POLICY.model_copy(update={"min_class_support": 20, "floors": {}, "per_class_floor": 0.65})
    floor = criterion_of(evaluate_gate(policy, m), "per_class.floor")
    assert floor["value"] < 0.65 and floor["verdict"] == "pass", floor
    assert "1 class(es) under the floor within noise" in floor["reason"]
    far = policy.model_copy(update={"per_class_floor": 0.95})
    assert criterion_of(evaluate_gate(far, m), "per_class.floor")["verdict"] == "fail"


@pytest.mark.parametrize(
    ("k", "n", "p"), [(0, 0, 0.5), (3, 10, 0.5), (10, 10, 0.5), (7, 40, 1 / 3), (0, 30, 0.2), (450, 1000, 0.47)]
)
def test_binomial_tail_matches_scipy(k, n, p):
    assert binomial_tail(k, n, p, upper=True) == pytest.approx(binom.sf(k - 1, n, p), rel=1e-9, abs=1e-300)
    assert binomial_tail(k, n, p, upper=False) == pytest.approx(binom.cdf(k, n, p), rel=1e-9, abs=1e-300)


def test_tarone_family_counts_only_testable_hypotheses():
    # two hypotheses can reach 0.05/2; the other 148 cannot reach even 0.05 (min p 0.125)
    min_p = np.array([1e-4, 1e-3] + [0.125] * 148)
    assert tarone_family(min_p, 0.05) == 2
    assert tarone_family(np.full(10, 1e-9), 0.05) == 10  # every one testable: Bonferroni's m
    assert tarone_family(np.array([]), 0.05) == 1


def test_holm_tarone_is_holm_when_every_test_can_reach_the_level():
    p = np.array([0.001, 0.012, 0.03, 0.3])
    rejected, family = holm_tarone(p, np.full(4, 1e-12), 0.05)
    # Holm: 0.001 <= 0.05/4, 0.012 <= 0.05/3, 0.03 > 0.05/2: stop
    assert rejected.tolist() == [True, True, False, False]
    assert family.tolist() == [4, 3, 2, 2]


def test_one_vs_rest_discordance_matches_a_loop():
    rng = np.random.default_rng(5)
    y, a, b = (rng.integers(0, 4, 300) for _ in range(3))
    only_a, only_b = one_vs_rest_discordance(y, a, b, 4)
    for c in range(4):
        right_a, right_b = (a == c) == (y == c), (b == c) == (y == c)
        assert only_a[c] == np.sum(right_a & ~right_b) and only_b[c] == np.sum(~right_a & right_b)
