"""Gate criteria of the causal_lm_lora task type.

Applied by ``retrain.gate.evaluate_gate`` after the criteria every task shares (sample size, ``floors`` of the
headline metrics ``format_exact_match`` and ``format_valid``, latency); ``gate.generation`` (optional) sets them:

- ``base.format_exact_match``: the challenger's gain over the base model without its adapter (metrics.json's
  ``baseline``), at least ``min_gain_vs_base`` (absolute: applies without a champion too);
- ``perplexity.ceiling``: the challenger's perplexity on the golden responses at most ``max_perplexity``;
- ``forgetting.text_perplexity``: challenger / base model perplexity on held-out plain text at most
  ``max_text_perplexity_ratio_vs_base``;
- against the champion: ``delta.<metric>`` for each ``gate.min_delta`` (negative = non-inferiority);
  ``mcnemar.format_exact_match``: the one-sided exact McNemar test over golden prompts (0/1 exact-match outcomes,
  paired) of "the champion matches more often": under equal rates, the prompts only the champion gets right among
  the discordant ones are Binomial(discordant, 1/2); the challenger fails when P(X >= that count) < ``alpha``;
  ``perplexity.ratio``: challenger / champion perplexity at most ``max_perplexity_ratio``.

Plain Python and numpy, no Airflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from retrain.gate import FAIL, PASS, at_least, at_most, binomial_tail, criterion, deltas, fmt_p, mcnemar_exact
from retrain.schema import Strict

if TYPE_CHECKING:
    from retrain.config import GatePolicy

METRIC = "format_exact_match"


class GenerationPolicy(Strict):
    """causal_lm_lora: the gain the adapter must keep over the base model it sits on, non-inferiority against the
    champion
    on format exact-match by a paired exact McNemar test over golden prompts, and perplexity limits."""

    min_gain_vs_base: float = Field(
        0.0,
        ge=-1,
        le=1,
        description="challenger − base model (no adapter) format exact-match must be "
        ">= this; applies without a champion too.",
    )
    alpha: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Level of the one-sided exact McNemar test over golden prompts that the champion "
        "matches the format more often; the challenger fails when the test rejects.",
    )
    max_perplexity: float | None = Field(
        None, gt=1, description="Ceiling of the challenger's perplexity on the golden responses."
    )
    max_perplexity_ratio: float | None = Field(
        None, ge=1, description="challenger / champion perplexity on the golden responses must be <= this."
    )
    max_text_perplexity_ratio_vs_base: float | None = Field(
        None,
        ge=1,
        description="challenger / base model perplexity on held-out plain text must be <= this (forgetting).",
    )

    def named_metrics(self) -> set[str]:
        return {"format_exact_match"}  # the metric its gain, McNemar and champion criteria judge


POLICY_SECTIONS = {"generation": GenerationPolicy}
"""The gate policy section(s) this task type adds to ``gate:`` (``retrain.config.GatePolicy``), by name."""


def criteria(policy: GatePolicy, metrics: dict[str, Any], has_champion: bool) -> list[dict[str, Any]]:
    """This task type's criteria, in the order gate.json lists them."""
    rule = policy.generation or GenerationPolicy()
    challenger, baseline = metrics["challenger"], metrics["baseline"]
    results = [
        at_least(
            f"base.{METRIC}",
            challenger[METRIC] - baseline[METRIC],
            rule.min_gain_vs_base,
            f"challenger − base model (no adapter) {METRIC}",
        )
    ]
    if rule.max_perplexity is not None:
        results.append(
            at_most(
                "perplexity.ceiling", challenger["perplexity"], rule.max_perplexity, "golden response perplexity", ".4g"
            )
        )
    if rule.max_text_perplexity_ratio_vs_base is not None:
        results.append(
            at_most(
                "forgetting.text_perplexity",
                challenger["text_perplexity"] / baseline["text_perplexity"],
                rule.max_text_perplexity_ratio_vs_base,
                "challenger / base model held-out text perplexity",
                ".4g",
            )
        )
    if has_champion:
        champion = metrics["champion"]
        results += deltas(policy, challenger, champion)
        results.append(mcnemar_non_inferiority(metrics["paired"], rule.alpha))
        if rule.max_perplexity_ratio is not None:
            results.append(
                at_most(
                    "perplexity.ratio",
                    challenger["perplexity"] / champion["perplexity"],
                    rule.max_perplexity_ratio,
                    "challenger / champion golden response perplexity",
                    ".4g",
                )
            )
    return results


def mcnemar_non_inferiority(paired: dict[str, Any], alpha: float) -> dict[str, Any]:
    """One-sided exact McNemar over golden prompts: fails when the champion's exact matches exceed the challenger's
    beyond noise."""
    a = np.asarray(paired["challenger"], dtype=bool)
    b = np.asarray(paired["champion"], dtype=bool)
    test = mcnemar_exact(a, b)
    only_a, only_b = test["only_challenger_correct"], test["only_champion_correct"]
    p = binomial_tail(only_b, only_a + only_b, 0.5, upper=True)
    ok = p >= alpha
    return criterion(
        f"mcnemar.{METRIC}",
        p,
        alpha,
        PASS if ok else FAIL,
        f"one-sided exact McNemar over {len(a)} prompts: {only_a} only the challenger matches, {only_b} only the "
        "champion; "
        f"P(champion-only >= {only_b} | equal rates) = {fmt_p(p)} {'>=' if ok else '<'} alpha {alpha} "
        f"(two-sided p {fmt_p(test['p_value'])})",
    )


def golden_files(config, source: Path) -> tuple[dict[str, bytes], int]:
    """A golden version from a CSV of prompt and reference response (the labels file lists the valid responses):
    ``golden.jsonl`` as a classifier's, whose label is the reference response."""
    from retrain.golden import classification_golden

    return classification_golden(config, source)
