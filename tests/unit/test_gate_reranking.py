"""The cross_encoder_reranking gate: floors, the p99 latency ceiling, the uplift over the first-stage order, its
paired bootstrap, non-inferiority against the champion and the paired bootstrap over queries, each passing and
failing on purpose; and the golden version's four files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gatecases import by_name, hits, paired_metrics, policy  # tests/ is on pytest's pythonpath
from retrain.config import ConfigError, GatePolicy, SignificancePolicy, load_config
from retrain.gate import evaluate_gate
from retrain.paths import PROJECT_ROOT
from retrain.tasks import task_module
from retrain.tasks.cross_encoder_reranking import METRICS, RerankingPolicy
from retrain_tools.seed import SeedError

TASK = "cross_encoder_reranking"


def figures(hits: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query figures of a model that puts the one relevant candidate first where ``hits``, else third."""
    return {"mrr_at_10": np.where(hits, 1.0, 1 / 3), "ndcg_at_10": np.where(hits, 1.0, 0.5)}


def metrics(challenger_hits, baseline_hits, champion_hits=None, p99: float = 6.0) -> dict:
    return paired_metrics(TASK, figures, challenger_hits, baseline_hits, champion_hits, p99, n_candidates=10)


def test_floors_pass_and_fail():
    m = metrics(hits(0.8), hits(0.6))
    ok = by_name(evaluate_gate(policy(floors={"ndcg_at_10": 0.85}), m, TASK))
    bad = by_name(evaluate_gate(policy(floors={"ndcg_at_10": 0.95}), m, TASK))
    assert ok["floor.ndcg_at_10"]["verdict"] == "pass" and ok["floor.ndcg_at_10"]["value"] == pytest.approx(0.9)
    assert bad["floor.ndcg_at_10"]["verdict"] == "fail"


def test_the_p99_latency_ceiling_passes_and_fails():
    gate = policy(latency_p99_ms_max=500)
    assert (
        by_name(evaluate_gate(gate, metrics(hits(0.8), hits(0.6), p99=480.0), TASK))["latency.p99_ms"]["verdict"]
        == "pass"
    )
    slow = evaluate_gate(gate, metrics(hits(0.8), hits(0.6), p99=520.0), TASK)
    assert slow["failed"] == ["latency.p99_ms"] and slow["decision"] == "reject"


def test_uplift_over_the_first_stage_passes_and_fails_without_a_champion():
    rule = RerankingPolicy(min_uplift_vs_first_stage={"mrr_at_10": 0.1, "ndcg_at_10": 0.0})
    better = evaluate_gate(policy(reranking=rule), metrics(hits(0.8), hits(0.6)), TASK)
    assert better["decision"] == "pass" and not better["has_champion"]
    assert by_name(better)["first_stage.mrr_at_10"]["value"] == pytest.approx(
        0.2 * 2 / 3, abs=1e-6
    )  # gate.json rounds to 6 places
    assert not any(name.startswith(("delta.", "significance.")) for name in by_name(better))  # absolute criteria only
    worse = evaluate_gate(policy(reranking=rule), metrics(hits(0.65), hits(0.6)), TASK)
    assert worse["failed"] == ["first_stage.mrr_at_10"]  # +0.05 × 2/3 < 0.1; nDCG gain +0.025 >= 0 passes
    below = evaluate_gate(policy(reranking=rule), metrics(hits(0.55), hits(0.6)), TASK)
    assert below["failed"] == ["first_stage.mrr_at_10", "first_stage.ndcg_at_10"]


def test_paired_bootstrap_against_the_first_stage_passes_and_fails():
    rule = RerankingPolicy(first_stage_margin=0.0)
    gate = policy(reranking=rule, significance=SignificancePolicy(resamples=2000, seed=0))
    # 40 of 200 queries gained, none lost: CI of Δ nDCG well above 0
    gained = by_name(evaluate_gate(gate, metrics(hits(0.8), hits(0.6)), TASK))["first_stage_significance.ndcg_at_10"]
    assert gained["verdict"] == "pass" and gained["value"] > 0 and "40 queries better, 0 worse" in gained["reason"]
    # 15 gained and 10 lost (a mean gain of +0.0125, inside the noise): the lower bound is below 0
    noisy = by_name(evaluate_gate(gate, metrics(hits(0.625, offset=10), hits(0.6)), TASK))[
        "first_stage_significance.ndcg_at_10"
    ]
    assert noisy["verdict"] == "fail" and noisy["value"] < 0 and "15 queries better, 10 worse" in noisy["reason"]
    assert "first_stage_significance.ndcg_at_10" not in by_name(
        evaluate_gate(policy(), metrics(hits(0.8), hits(0.6)), TASK)
    )


def test_non_inferiority_against_the_champion_passes_and_fails():
    gate = policy(min_delta={"mrr_at_10": -0.02}, significance=SignificancePolicy(margin=-1.0))
    slightly_worse = by_name(evaluate_gate(gate, metrics(hits(0.79), hits(0.6), hits(0.8)), TASK))
    much_worse = by_name(evaluate_gate(gate, metrics(hits(0.7), hits(0.6), hits(0.8)), TASK))
    assert slightly_worse["delta.mrr_at_10"]["verdict"] == "pass"
    assert slightly_worse["delta.mrr_at_10"]["value"] == pytest.approx(-0.01 * 2 / 3, abs=1e-6)
    assert much_worse["delta.mrr_at_10"]["verdict"] == "fail"


def test_paired_bootstrap_against_the_champion_passes_and_fails():
    gate = policy(significance=SignificancePolicy(margin=-0.01, resamples=2000, seed=0))
    gained = by_name(evaluate_gate(gate, metrics(hits(0.9), hits(0.6), hits(0.8)), TASK))
    assert gained["significance.ndcg_at_10"]["verdict"] == "pass" and gained["significance.ndcg_at_10"]["value"] > 0
    lost = by_name(evaluate_gate(gate, metrics(hits(0.7, offset=30), hits(0.6), hits(0.8)), TASK))
    assert lost["significance.ndcg_at_10"]["verdict"] == "fail"
    assert "10 queries better, 30 worse" in lost["significance.ndcg_at_10"]["reason"]
    on_mrr = policy(
        significance=SignificancePolicy(margin=-0.01), reranking=RerankingPolicy(significance_metric="mrr_at_10")
    )
    assert "significance.mrr_at_10" in by_name(evaluate_gate(on_mrr, metrics(hits(0.9), hits(0.6), hits(0.8)), TASK))


def test_a_reranking_policy_naming_another_metric_is_refused(tmp_path):
    source = (PROJECT_ROOT / "config" / "models" / "reranker.yaml").read_text()
    path = tmp_path / "reranker.yaml"
    section = "  reranking:\n    significance_metric: ndcg_at_10\n"
    assert section in source
    path.write_text(source.replace(section, "  reranking:\n    significance_metric: recall_at_10\n"))
    with pytest.raises(
        ConfigError,
        match=r"gate.reranking names \['recall_at_10'\], not headline metrics of task 'cross_encoder_reranking'",
    ):
        load_config(path)


def test_the_shipped_config_leaves_other_configs_digests_alone():
    config = load_config(PROJECT_ROOT / "config" / "models" / "reranker.yaml")
    assert config.task == TASK and config.gate.reranking is not None and config.schedule.cadence == "monthly"
    assert "reranking" not in load_config(
        PROJECT_ROOT / "config" / "models" / "embedding_adapter.yaml"
    ).gate.model_dump(exclude=GatePolicy().unset_optional_sections())


def test_metrics_json_of_another_task_is_refused():
    with pytest.raises(ValueError, match=f"written for task '{TASK}'"):
        evaluate_gate(policy(), metrics(hits(0.8), hits(0.6)), "embedding_adapter")
    assert set(METRICS) <= set(metrics(hits(0.8), hits(0.6))["challenger"])


def test_the_golden_version_is_its_four_files_byte_for_byte():
    source = PROJECT_ROOT / "data" / "reranking" / "golden.jsonl"
    files, count = task_module("gate", TASK).golden_files(None, source)
    assert sorted(files) == ["candidates.jsonl", "corpus.jsonl", "golden.jsonl", "qrels.jsonl"]
    assert all(files[name] == (source.parent / name).read_bytes() for name in files)
    assert count == len(source.read_text().splitlines())


@pytest.mark.parametrize(
    "line, rule",
    [
        (
            {"query_id": "q_nope", "passage_ids": ["p_card_arrival"], "scores": [0.5]},
            "rule: candidates name known queries",
        ),
        ({"query_id": "Q1", "passage_ids": ["p_nope"], "scores": [0.5]}, "rule: candidates are passages of the corpus"),
        (
            {"query_id": "Q1", "passage_ids": ["p_card_arrival", "p_card_linking"], "scores": [0.1, 0.5]},
            "rule: candidates are the first stage's top k, best first",
        ),
    ],
)
def test_a_bad_candidates_row_is_refused_with_file_line_and_rule(tmp_path, line, rule):
    data = PROJECT_ROOT / "data" / "reranking"
    for name in ("corpus.jsonl",):
        (tmp_path / name).write_bytes((data / name).read_bytes())
    (tmp_path / "golden.jsonl").write_text(json.dumps({"key": "Q1", "text": "my card has not arrived"}) + "\n")
    (tmp_path / "qrels.jsonl").write_text(
        json.dumps({"query_id": "Q1", "passage_id": "p_card_arrival", "relevance": 1}) + "\n"
    )
    (tmp_path / "candidates.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(SeedError, match=rf"candidates.jsonl: line 1: .*{rule}"):
        task_module("gate", TASK).golden_files(None, tmp_path / "golden.jsonl")
