"""The false-escalation criteria (sentiment: a "negative" prediction sends the message to a person).

Each criterion passes and fails on purpose, and the paired test matches a reference. Label 0 is
the escalation label ("negative"), label 1 is "positive"; only truly positive examples can be
falsely escalated.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from retrain.config import GatePolicy
from retrain.gate import evaluate_gate
from retrain.tasks.text_classification import (
    FalseEscalationPolicy,
    escalation_counts,
    false_escalation,
    ratio_margin_test,
)

LABELS = ["negative", "positive"]
NEG, POS = 0, 1


def policy(max_rate: float = 0.12, max_ratio: float = 1.15, alpha: float = 0.05) -> GatePolicy:
    return GatePolicy(
        min_total_examples=1,
        false_escalation=FalseEscalationPolicy(max_rate=max_rate, max_ratio=max_ratio, alpha=alpha),
    )


def metrics(y, challenger, champion=None, escalation_label: str | None = "negative") -> dict:
    """What the criteria read of metrics.json: labels, the escalation label and the paired predictions."""
    paired = {
        "y_true": list(y),
        "challenger_pred": list(challenger),
        "champion_pred": None if champion is None else list(champion),
    }
    out = {"labels": LABELS, "paired": paired}
    if escalation_label:
        out["escalation_label"] = escalation_label
    return out


def by_name(results: list[dict]) -> dict[str, dict]:
    return {r["name"]: r for r in results}


def test_escalation_counts_by_hand():
    # true:  N  N  P  P  P  P      predicted: N  P  N  P  P  N
    # the truly positive examples are 3..6 (four of them); two are predicted negative: rate 2/4
    y = np.array([NEG, NEG, POS, POS, POS, POS])
    pred = np.array([NEG, POS, NEG, POS, POS, NEG])
    assert escalation_counts(y, pred, NEG) == (2, 4)
    rate = by_name(false_escalation(policy(max_rate=0.5), metrics(y, pred), has_champion=False))[
        "false_escalation.rate"
    ]
    assert rate["value"] == 0.5 and rate["verdict"] == "pass"  # 0.5 <= 0.5: the ceiling is inclusive


def test_rate_ceiling_passes_and_fails():
    y = [NEG] * 10 + [POS] * 10
    one_false = [NEG] * 10 + [NEG] + [POS] * 9  # 1 of 10 positives escalated: 0.10
    two_false = [NEG] * 10 + [NEG] * 2 + [POS] * 8  # 0.20
    ok = by_name(false_escalation(policy(), metrics(y, one_false), has_champion=False))
    bad = by_name(false_escalation(policy(), metrics(y, two_false), has_champion=False))
    assert ok["false_escalation.rate"]["verdict"] == "pass" and ok["false_escalation.rate"]["value"] == pytest.approx(
        0.1
    )
    assert bad["false_escalation.rate"]["verdict"] == "fail" and "2 of 10" in bad["false_escalation.rate"]["reason"]
    assert "false_escalation.ratio" not in ok  # no champion: absolute criteria only


def paired_case(calm: int, only_challenger: int, only_champion: int, both: int):
    """``calm`` truly positive examples (plus 10 negatives, always right): who escalates which."""
    y = [POS] * calm + [NEG] * 10
    a, b = [POS] * calm + [NEG] * 10, [POS] * calm + [NEG] * 10
    i = 0
    for count, targets in ((both, (a, b)), (only_challenger, (a,)), (only_champion, (b,))):
        for _ in range(count):
            for t in targets:
                t[i] = NEG
            i += 1
    return y, a, b


def test_ratio_fails_when_clearly_past_the_limit():
    # champion escalates 50 of 1000 positives, the challenger those 50 and 50 more: 10% vs 5%, ratio 2.0
    y, a, b = paired_case(1000, only_challenger=50, only_champion=0, both=50)
    result = by_name(false_escalation(policy(max_rate=0.5), metrics(y, a, b), has_champion=True))[
        "false_escalation.ratio"
    ]
    assert result["verdict"] == "fail" and result["value"] == pytest.approx(2.0)
    assert "beyond noise" in result["reason"] and "50 only-challenger vs 0 only-champion" in result["reason"]


def test_ratio_past_the_limit_within_noise_passes_and_says_so():
    # 3 vs 2 false escalations of 100 (ratio 1.5), one discordant pair: no evidence
    y, a, b = paired_case(100, only_challenger=1, only_champion=0, both=2)
    result = by_name(false_escalation(policy(), metrics(y, a, b), has_champion=True))["false_escalation.ratio"]
    assert result["verdict"] == "pass" and result["value"] == pytest.approx(1.5)
    assert "within noise" in result["reason"]


def test_ratio_within_the_limit_passes():
    y, a, b = paired_case(1000, only_challenger=20, only_champion=20, both=40)  # equal rates
    result = by_name(false_escalation(policy(), metrics(y, a, b), has_champion=True))["false_escalation.ratio"]
    assert result["verdict"] == "pass" and result["value"] == pytest.approx(1.0)


def test_champion_without_false_escalations():
    y, a, b = paired_case(200, only_challenger=0, only_champion=0, both=0)
    assert by_name(false_escalation(policy(), metrics(y, a, b), True))["false_escalation.ratio"]["value"] == 1.0
    y, a, b = paired_case(200, only_challenger=12, only_champion=0, both=0)  # 0 -> 6%: no ratio, but clear evidence
    result = by_name(false_escalation(policy(), metrics(y, a, b), True))["false_escalation.ratio"]
    assert result["value"] is None and result["verdict"] == "fail"


@pytest.mark.parametrize(("only_a", "only_b", "both"), [(9, 2, 0), (5, 5, 10), (30, 12, 40), (0, 4, 3)])
def test_ratio_test_is_one_sided_mcnemar_at_ratio_one(only_a, only_b, both):
    p = ratio_margin_test(only_a, only_b, both, ratio=1.0)
    assert p == pytest.approx(binomtest(only_a, only_a + only_b, 0.5, alternative="greater").pvalue)


def test_ratio_test_boundary_probability():
    # with no shared escalations the boundary is only_a/n = r/(1+r)
    only_a, only_b, r = 30, 12, 1.15
    assert ratio_margin_test(only_a, only_b, 0, r) == pytest.approx(binom.sf(only_a - 1, only_a + only_b, r / (1 + r)))
    assert ratio_margin_test(0, 0, 5, r) == 1.0  # no discordant pair: no evidence


def test_the_gate_applies_both_criteria_and_metrics_must_carry_the_label():
    y, a, b = paired_case(1000, only_challenger=50, only_champion=0, both=50)
    m = {**metrics(y, a, b), "golden_version": "v1", "n_examples": len(y), "task": "text_classification"}
    for role in ("challenger", "champion"):
        m[role] = {
            "macro_f1": 0.9,
            "accuracy": 0.9,
            "latency_ms": {"p50": 1, "p99": 2},
            "version": 1,
            "per_class": {name: {"f1": 0.9, "support": int(np.sum(np.array(y) == i))} for i, name in enumerate(LABELS)},
        }
    m["paired"].update(
        challenger_correct=[int(t == p) for t, p in zip(y, a, strict=True)],
        champion_correct=[int(t == p) for t, p in zip(y, b, strict=True)],
    )
    gate = evaluate_gate(policy(max_rate=0.05), m, task="text_classification")
    assert {"false_escalation.rate", "false_escalation.ratio"} <= set(gate["failed"])
    assert gate["policy"]["false_escalation"]["max_ratio"] == 1.15
    without = by_name(false_escalation(policy(), metrics(y, a, b, escalation_label=None), True))
    assert (
        without["false_escalation.rate"]["verdict"] == "fail"
        and "escalation_label" in without["false_escalation.rate"]["reason"]
    )
    with pytest.raises(ValueError, match="written for task"):
        evaluate_gate(policy(), {**m, "task": "text_classification"}, task="embedding_adapter")


def test_policies_without_the_section_keep_their_gate_json_policy():
    assert (
        "false_escalation"
        not in evaluate_gate(
            GatePolicy(min_total_examples=1),
            {
                "golden_version": "v1",
                "n_examples": 2,
                "labels": LABELS,
                "challenger": {
                    "macro_f1": 1.0,
                    "accuracy": 1.0,
                    "latency_ms": {"p50": 1, "p99": 1},
                    "per_class": {name: {"f1": 1.0, "support": 1} for name in LABELS},
                },
                "champion": None,
                "paired": {"y_true": [0, 1], "challenger_pred": [0, 1]},
            },
        )["policy"]
    )
