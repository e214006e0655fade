"""The embedding_adapter gate: floors, the gain over the frozen encoder, non-inferiority against the
champion and the paired bootstrap over queries, each passing and failing on purpose."""

from __future__ import annotations

import numpy as np
import pytest

from gatecases import by_name, hits, paired_metrics, policy  # tests/ is on pytest's pythonpath
from retrain.config import ConfigError, SignificancePolicy, load_config
from retrain.gate import evaluate_gate
from retrain.tasks.embedding_adapter import METRICS, RetrievalPolicy, paired_bootstrap_mean


def figures(hits: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query figures of a model that ranks the one relevant passage first where ``hits``, else third."""
    return {
        "recall_at_1": hits.astype(float),
        "recall_at_5": np.ones(len(hits)),
        "recall_at_10": np.ones(len(hits)),
        "mrr_at_10": np.where(hits, 1.0, 1 / 3),
        "ndcg_at_10": np.where(hits, 1.0, 0.5),
    }


def metrics(challenger_hits, baseline_hits, champion_hits=None) -> dict:
    return paired_metrics("embedding_adapter", figures, challenger_hits, baseline_hits, champion_hits)


def test_floors_pass_and_fail():
    m = metrics(hits(0.8), hits(0.6))
    ok = by_name(evaluate_gate(policy(floors={"recall_at_1": 0.75}), m, "embedding_adapter"))
    bad = by_name(evaluate_gate(policy(floors={"recall_at_1": 0.85}), m, "embedding_adapter"))
    assert ok["floor.recall_at_1"]["verdict"] == "pass" and ok["floor.recall_at_1"]["value"] == pytest.approx(0.8)
    assert bad["floor.recall_at_1"]["verdict"] == "fail"


def test_gain_over_the_frozen_encoder_passes_and_fails_without_a_champion():
    rule = RetrievalPolicy(min_delta_vs_frozen={"recall_at_1": 0.1, "ndcg_at_10": 0.0})
    better = evaluate_gate(policy(retrieval=rule), metrics(hits(0.8), hits(0.6)), "embedding_adapter")
    assert better["decision"] == "pass" and not better["has_champion"]
    assert by_name(better)["frozen.recall_at_1"]["value"] == pytest.approx(0.2)
    assert not any(name.startswith(("delta.", "significance.")) for name in by_name(better))  # absolute criteria only
    worse = evaluate_gate(policy(retrieval=rule), metrics(hits(0.65), hits(0.6)), "embedding_adapter")
    assert worse["failed"] == ["frozen.recall_at_1"]  # +0.05 < 0.1; nDCG gain +0.025 >= 0 passes


def test_non_inferiority_against_the_champion_passes_and_fails():
    gate = policy(min_delta={"mrr_at_10": -0.02}, significance=SignificancePolicy(margin=-1.0))
    slightly_worse = by_name(evaluate_gate(gate, metrics(hits(0.79), hits(0.6), hits(0.8)), "embedding_adapter"))
    much_worse = by_name(evaluate_gate(gate, metrics(hits(0.7), hits(0.6), hits(0.8)), "embedding_adapter"))
    # MRR moves by (1 − 1/3) per hit: −0.01 × 2/3 = −0.0067 is within −0.02; −0.1 × 2/3 = −0.067 is not
    assert slightly_worse["delta.mrr_at_10"]["verdict"] == "pass"
    assert slightly_worse["delta.mrr_at_10"]["value"] == pytest.approx(
        -0.01 * 2 / 3, abs=1e-6
    )  # gate.json rounds to 6 places
    assert much_worse["delta.mrr_at_10"]["verdict"] == "fail"


def test_paired_bootstrap_over_queries_passes_and_fails():
    gate = policy(significance=SignificancePolicy(margin=-0.01, resamples=2000, seed=0))
    # 20 of 200 queries gained, none lost: nDCG Δ +0.05, CI well above the margin
    gained = by_name(evaluate_gate(gate, metrics(hits(0.9), hits(0.6), hits(0.8)), "embedding_adapter"))
    assert gained["significance.ndcg_at_10"]["verdict"] == "pass" and gained["significance.ndcg_at_10"]["value"] > 0
    # 30 lost, 10 gained: Δ −0.05, its CI lower bound below −0.01
    lost = by_name(evaluate_gate(gate, metrics(hits(0.7, offset=30), hits(0.6), hits(0.8)), "embedding_adapter"))
    assert lost["significance.ndcg_at_10"]["verdict"] == "fail"
    assert "10 queries better, 30 worse" in lost["significance.ndcg_at_10"]["reason"]
    # the judged metric is configurable: recall@5 is equal for all queries, so its CI is [0, 0]
    on_recall5 = policy(
        significance=SignificancePolicy(margin=-0.01), retrieval=RetrievalPolicy(significance_metric="recall_at_5")
    )
    same = by_name(evaluate_gate(on_recall5, metrics(hits(0.7, offset=30), hits(0.6), hits(0.8)), "embedding_adapter"))
    assert same["significance.recall_at_5"]["verdict"] == "pass" and same["significance.recall_at_5"]["value"] == 0.0


def test_paired_bootstrap_matches_a_plain_resampling_loop():
    rng = np.random.default_rng(3)
    a, b = rng.random(150), rng.random(150)
    ci = paired_bootstrap_mean(a, b, 4000, 0.95, seed=1)
    d = a - b
    loop = [d[rng.integers(0, 150, 150)].mean() for _ in range(4000)]
    lower, upper = np.quantile(loop, [0.025, 0.975])
    assert ci["delta"] == pytest.approx(d.mean())
    assert ci["lower"] == pytest.approx(lower, abs=0.01) and ci["upper"] == pytest.approx(upper, abs=0.01)
    assert paired_bootstrap_mean(a, a, 1000, 0.95, 0)["lower"] == 0.0


def test_a_retrieval_policy_naming_another_tasks_metric_is_refused(tmp_path):
    source = (load_config.__globals__["PROJECT_ROOT"] / "config" / "models" / "intent.yaml").read_text()
    path = tmp_path / "intent.yaml"
    path.write_text(source.replace("\ngate:\n", "\ngate:\n  retrieval: {significance_metric: ndcg_at_10}\n", 1))
    with pytest.raises(
        ConfigError, match=r"gate.retrieval names \['ndcg_at_10'\], not headline metrics of task 'text_classification'"
    ):
        load_config(path)


def test_metrics_json_of_another_task_is_refused():
    with pytest.raises(ValueError, match="written for task 'embedding_adapter'"):
        evaluate_gate(policy(), metrics(hits(0.8), hits(0.6)), "text_classification")
    assert set(METRICS) <= set(metrics(hits(0.8), hits(0.6))["challenger"])
