"""The causal_lm_lora gate: floors, the gain over the base model, the one-sided exact McNemar non-inferiority test
against the champion, and the perplexity ceiling, ratio and forgetting limit, each passing and failing on purpose."""

from __future__ import annotations

import numpy as np
import pytest

from gatecases import N, by_name, hits, policy  # tests/ is on pytest's pythonpath
from retrain.config import ConfigError, GatePolicy, ModelConfig, load_config
from retrain.gate import binomial_tail, evaluate_gate
from retrain.paths import PROJECT_ROOT
from retrain.tasks.causal_lm_lora import GenerationPolicy

TASK = "causal_lm_lora"


def block(matches: np.ndarray, perplexity: float = 1.5, text_perplexity: float = 40.0) -> dict:
    return {
        "format_exact_match": float(np.mean(matches)),
        "format_valid": 1.0,
        "perplexity": perplexity,
        "text_perplexity": text_perplexity,
        "latency_ms": {"p50": 300.0, "p99": 400.0},
    }


def metrics(challenger, baseline, champion=None, ppl=(1.5, 1.5), text_ppl=(40.0, 40.0)) -> dict:
    """``ppl``: challenger and champion golden perplexity; ``text_ppl``: challenger and base model held-out text
    perplexity."""
    per = {"challenger": np.asarray(challenger, int), "baseline": np.asarray(baseline, int)}
    if champion is not None:
        per["champion"] = np.asarray(champion, int)
    return {
        "task": TASK,
        "n_examples": len(challenger),
        "golden_version": "v1",
        "challenger": block(per["challenger"], ppl[0], text_ppl[0]),
        "baseline": block(per["baseline"], 3.0, text_ppl[1]),
        "champion": block(per["champion"], ppl[1]) if champion is not None else None,
        "paired": {
            "keys": [f"p{i}" for i in range(len(challenger))],
            **{r: v.tolist() for r, v in per.items()},
            **({} if champion is not None else {"champion": None}),
        },
    }


def matches(share: float, n: int = N, offset: int = 0) -> np.ndarray:
    """The first ``share`` of n prompts (rotated by ``offset``) are exact matches."""
    return hits(share, n, offset).astype(int)


def test_floors_pass_and_fail():
    m = metrics(matches(0.8), matches(0.0))
    ok = by_name(evaluate_gate(policy(floors={"format_exact_match": 0.75}), m, TASK))
    bad = by_name(evaluate_gate(policy(floors={"format_exact_match": 0.85}), m, TASK))
    assert ok["floor.format_exact_match"]["verdict"] == "pass" and ok["floor.format_exact_match"][
        "value"
    ] == pytest.approx(0.8)
    assert bad["floor.format_exact_match"]["verdict"] == "fail"


def test_gain_over_the_base_model_passes_and_fails_without_a_champion():
    m = metrics(matches(0.8), matches(0.5))
    ok = evaluate_gate(policy(generation=GenerationPolicy(min_gain_vs_base=0.25)), m, TASK)
    bad = evaluate_gate(policy(generation=GenerationPolicy(min_gain_vs_base=0.35)), m, TASK)
    assert ok["decision"] == "pass" and not ok["has_champion"]
    assert by_name(ok)["base.format_exact_match"]["value"] == pytest.approx(0.3)
    assert bad["failed"] == ["base.format_exact_match"]
    assert "mcnemar.format_exact_match" not in by_name(ok)  # no champion: only absolute criteria


def test_mcnemar_non_inferiority_passes_on_noise_and_fails_on_a_real_drop():
    champion = matches(0.8)
    # 6 prompts only the champion matches, 4 only the challenger: P(X >= 6 | Bin(10, 1/2)) = 0.377 -> not inferior
    close = champion.copy()
    close[:6] = 0
    close[170:174] = 1
    ok = by_name(evaluate_gate(policy(), metrics(close, matches(0.0), champion), TASK))["mcnemar.format_exact_match"]
    assert ok["verdict"] == "pass" and ok["value"] == pytest.approx(binomial_tail(6, 10, 0.5, upper=True), abs=1e-6)
    assert ok["value"] == pytest.approx(386 / 1024, abs=1e-6)  # (C(10,6)+C(10,7)+C(10,8)+C(10,9)+C(10,10)) / 2^10
    # 20 only the champion, 2 only the challenger: P(X >= 20 | Bin(22, 1/2)) = (231 + 22 + 1) / 2^22 -> inferior beyond
    # noise
    worse = champion.copy()
    worse[:20] = 0
    worse[170:172] = 1
    bad = by_name(evaluate_gate(policy(), metrics(worse, matches(0.0), champion), TASK))["mcnemar.format_exact_match"]
    assert bad["verdict"] == "fail" and bad["value"] == pytest.approx(254 / 2**22, abs=1e-9)
    assert "20 only the champion" in bad["reason"]


def test_min_delta_non_inferiority_against_the_champion():
    m = metrics(matches(0.78), matches(0.0), matches(0.8))
    ok = by_name(evaluate_gate(policy(min_delta={"format_exact_match": -0.05}), m, TASK))["delta.format_exact_match"]
    bad = by_name(evaluate_gate(policy(min_delta={"format_exact_match": -0.01}), m, TASK))["delta.format_exact_match"]
    assert ok["verdict"] == "pass" and bad["verdict"] == "fail"


def test_perplexity_ceiling_and_ratio_against_the_champion():
    m = metrics(matches(0.8), matches(0.0), matches(0.8), ppl=(1.6, 1.4))
    ok = by_name(
        evaluate_gate(policy(generation=GenerationPolicy(max_perplexity=1.7, max_perplexity_ratio=1.2)), m, TASK)
    )
    bad = by_name(
        evaluate_gate(policy(generation=GenerationPolicy(max_perplexity=1.5, max_perplexity_ratio=1.1)), m, TASK)
    )
    assert ok["perplexity.ceiling"]["verdict"] == "pass" and ok["perplexity.ratio"]["verdict"] == "pass"
    assert ok["perplexity.ratio"]["value"] == pytest.approx(1.6 / 1.4, abs=1e-6)
    assert bad["perplexity.ceiling"]["verdict"] == "fail" and bad["perplexity.ratio"]["verdict"] == "fail"


def test_forgetting_limit_on_held_out_text_perplexity():
    m = metrics(matches(0.8), matches(0.0), text_ppl=(50.0, 40.0))
    ok = by_name(evaluate_gate(policy(generation=GenerationPolicy(max_text_perplexity_ratio_vs_base=1.3)), m, TASK))
    bad = by_name(evaluate_gate(policy(generation=GenerationPolicy(max_text_perplexity_ratio_vs_base=1.2)), m, TASK))
    assert ok["forgetting.text_perplexity"]["verdict"] == "pass" and ok["forgetting.text_perplexity"][
        "value"
    ] == pytest.approx(1.25)
    assert bad["forgetting.text_perplexity"]["verdict"] == "fail"


def test_the_generation_section_is_validated_and_left_out_of_digests_while_unset(tmp_path):
    llm = load_config(PROJECT_ROOT / "config/models/llm_lora.yaml")
    assert llm.task == TASK and llm.gate.generation is not None and llm.schedule.cadence == "quarterly"
    raw = llm.model_dump(mode="json")
    sentiment = load_config(PROJECT_ROOT / "config/models/sentiment.yaml").model_dump(mode="json")
    with pytest.raises(
        ValueError,
        match=r"gate.generation names \['format_exact_match'\], not headline metrics of task 'text_classification'",
    ):
        ModelConfig.model_validate(
            {**sentiment, "gate": {**sentiment["gate"], "generation": {"min_gain_vs_base": 0.1}}}
        )
    with pytest.raises(ValueError, match="max_perplexity_ratio"):
        ModelConfig.model_validate({**raw, "gate": {**raw["gate"], "generation": {"max_perplexity_ratio": 0.5}}})
    assert "generation" in (GatePolicy().unset_optional_sections() or set())
    path = tmp_path / "llm_lora.yaml"
    path.write_text(
        (PROJECT_ROOT / "config/models/llm_lora.yaml").read_text().replace("  generation:\n", "  generation_typo:\n")
    )
    with pytest.raises(ConfigError, match="generation_typo"):
        load_config(path)
