"""Gate criteria of the cross_encoder_reranking task type.

Applied by ``retrain.gate.evaluate_gate`` after the criteria every task shares (sample size,
``floors`` of the headline metrics, latency p50 and the p99 ceiling ``latency_p99_ms_max`` of one
request of k candidates):

- ``first_stage.<metric>``: the challenger's gain over the first-stage order of the same candidates, at
  least ``gate.reranking.min_uplift_vs_first_stage[metric]`` (absolute: applies without a champion too);
- ``first_stage_significance.<metric>`` when ``gate.reranking.first_stage_margin`` is set: the lower bound
  of a paired percentile bootstrap CI over golden queries of mean(challenger − first stage) of the per-query
  ``significance_metric`` must clear that margin (also without a champion);
- against the champion: ``delta.<metric>`` for each ``gate.min_delta`` (a negative margin is
  non-inferiority), and ``significance.<metric>``: the paired bootstrap over queries of Δ
  ``significance_metric`` (default nDCG@10) against ``gate.significance.margin``, as embedding_adapter's.

Plain Python and numpy, no Airflow.
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from retrain.gate import at_least, deltas
from retrain.schema import Strict

if TYPE_CHECKING:
    from retrain.config import GatePolicy
from retrain.tasks.embedding_adapter import bootstrap_criterion, significance
from retrain.tasks.embedding_adapter import golden_files as retrieval_golden_files

METRICS = ("mrr_at_10", "ndcg_at_10")


class RerankingPolicy(Strict):
    """cross_encoder_reranking: the gain the reranker must keep over the first-stage order of the same fixed
    candidates (else serving the first stage alone would do), and the metric of the paired bootstrap over queries."""

    significance_metric: str = Field(
        "ndcg_at_10",
        description="Headline metric whose Δ the paired bootstrap over queries judges: "
        "against the champion (gate.significance), and against the first stage "
        "when first_stage_margin is set.",
    )
    min_uplift_vs_first_stage: dict[str, float] = Field(
        default_factory=dict,
        description="challenger − first-stage order must be >= "
        "this, per headline metric; applies without a champion too.",
    )
    first_stage_margin: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="If set, the lower bound of the paired bootstrap CI over "
        "queries of Δ significance_metric against the first stage must be >= this.",
    )

    def named_metrics(self) -> set[str]:
        return {self.significance_metric, *self.min_uplift_vs_first_stage}


POLICY_SECTIONS = {"reranking": RerankingPolicy}
"""The gate policy section(s) this task type adds to ``gate:`` (``retrain.config.GatePolicy``), by name."""


def criteria(policy: GatePolicy, metrics: dict[str, Any], has_champion: bool) -> list[dict[str, Any]]:
    """This task type's criteria, in the order gate.json lists them."""
    rule = policy.reranking or RerankingPolicy()
    challenger, baseline = metrics["challenger"], metrics["baseline"]
    results = [
        at_least(f"first_stage.{m}", challenger[m] - baseline[m], margin, f"challenger − first-stage order {m}")
        for m, margin in rule.min_uplift_vs_first_stage.items()
    ]
    if rule.first_stage_margin is not None:
        results.append(first_stage_significance(policy, rule, metrics["paired"]))
    if has_champion:
        results += deltas(policy, challenger, metrics["champion"])
        results.append(significance(policy, rule.significance_metric, metrics["paired"]))
    return results


def first_stage_significance(policy: GatePolicy, rule: RerankingPolicy, paired: dict[str, Any]) -> dict[str, Any]:
    """The paired bootstrap over queries of Δ ``significance_metric`` against the first-stage order
    (``paired["baseline"]``):
    its lower bound must clear ``first_stage_margin``."""
    metric = rule.significance_metric
    return bootstrap_criterion(
        f"first_stage_significance.{metric}",
        policy,
        metric,
        paired,
        "baseline",
        rule.first_stage_margin,
        "first-stage order",
    )


def candidate_list_problem(ids: Any, scores: Any, k: int | None, passages: Any, corpus_name: str) -> str | None:
    """What is wrong with one first-stage candidate list (``passage_ids``, ``scores``), as "<what>; rule: <rule>", or
    None: the rules both the seeding of a golden version and the evaluation job's read of it apply. ``k`` is the
    earlier lists' length (None for the first), ``passages`` the corpus's passage ids."""
    if not isinstance(ids, list) or not isinstance(scores, list) or len(ids) != len(scores) or not ids:
        return "passage_ids and scores are not non-empty lists of one length; rule: one first-stage score per candidate"
    if k is not None and len(ids) != k:
        return f"{len(ids)} candidates, earlier rows have {k}; rule: every query has the same k candidates"
    unknown = next((pid for pid in ids if pid not in passages), None)
    if unknown is not None:
        return f"passage_id {unknown!r} is not in {corpus_name}; rule: candidates are passages of the corpus"
    if len(set(ids)) != len(ids):
        return "a passage repeats in the list; rule: a candidate list names each passage once"
    if not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores) or any(
        a < b for a, b in pairwise(scores)
    ):
        return "scores are not numbers in descending order; rule: candidates are the first stage's top k, best first"
    return None


def golden_files(config, source: Path) -> tuple[dict[str, bytes], int]:
    """A reranking golden version: embedding_adapter's three files (``source`` queries, ``corpus.jsonl``,
    ``qrels.jsonl``,
    checked the same way) and ``candidates.jsonl`` beside them (``{"query_id", "passage_ids": [k], "scores": [k]}``, the
    first stage's top k, best first), published byte for byte once every golden query has exactly one candidate list of
    the same k known, distinct passages with descending scores. Errors name the file, the line and the rule."""
    from retrain.golden import SeedError

    files, count = retrieval_golden_files(config, source)
    path = source.parent / "candidates.jsonl"
    if not path.is_file():
        raise SeedError(
            f"{path}: no such file; rule: a reranking golden set is {source.name}, corpus.jsonl, qrels.jsonl "
            "and candidates.jsonl side by side"
        )
    queries = {json.loads(line)["key"] for line in files["golden.jsonl"].decode("utf-8").splitlines() if line.strip()}
    passages = {
        json.loads(line)["passage_id"] for line in files["corpus.jsonl"].decode("utf-8").splitlines() if line.strip()
    }
    seen: dict[str, int] = {}
    k = None
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {line_no}"
        row = json.loads(line)
        query, ids, scores = row.get("query_id"), row.get("passage_ids"), row.get("scores")
        if query not in queries:
            raise SeedError(
                f"{where}: query_id {query!r} is not a query in {source}; rule: candidates name known queries"
            )
        if query in seen:
            raise SeedError(
                f"{where}: query_id {query!r} repeated (first on line {seen[query]}); rule: one candidate list per "
                "query"
            )
        seen[query] = line_no
        problem = candidate_list_problem(ids, scores, k, passages, str(source.parent / "corpus.jsonl"))
        if problem:
            raise SeedError(f"{where}: {problem}")
        k = len(ids)
    missing = sorted(queries - set(seen))
    if missing:
        raise SeedError(
            f"{path}: query {missing[0]!r} has no candidate list ({len(missing)} such); rule: every golden query has "
            "one"
        )
    return {**files, "candidates.jsonl": path.read_bytes()}, count
