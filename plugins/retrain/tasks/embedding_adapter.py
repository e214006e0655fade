"""Gate criteria of the embedding_adapter task type.

Applied by ``retrain.gate.evaluate_gate`` after the criteria every task shares (sample size,
``floors`` of the headline metrics, latency):

- ``frozen.<metric>``: the challenger's gain over the frozen encoder it sits on, at least
  ``gate.retrieval.min_delta_vs_frozen[metric]`` (absolute: applies without a champion too);
- against the champion: ``delta.<metric>`` for each ``gate.min_delta`` (a negative margin is
  non-inferiority), and ``significance.<metric>``: the lower bound of a paired percentile
  bootstrap CI over golden queries of mean(challenger − champion) of the per-query metric
  (``gate.retrieval.significance_metric``, default nDCG@10) must clear ``gate.significance.margin``.

Plain Python and numpy, no Airflow.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from retrain.gate import FAIL, PASS, at_least, criterion, deltas
from retrain.schema import Strict

if TYPE_CHECKING:
    from retrain.config import GatePolicy

METRICS = ("recall_at_1", "recall_at_5", "recall_at_10", "mrr_at_10", "ndcg_at_10")


class RetrievalPolicy(Strict):
    """embedding_adapter: which metric the paired bootstrap over queries judges, and the gain the adapter must
    keep over the frozen encoder it sits on (else serving the frozen encoder would do as well)."""

    significance_metric: str = Field(
        "ndcg_at_10",
        description="Headline metric whose Δ against the champion the paired "
        "bootstrap over queries judges (gate.significance).",
    )
    min_delta_vs_frozen: dict[str, float] = Field(
        default_factory=dict,
        description="challenger − frozen encoder must be >= this, per headline metric; applies without a champion too.",
    )

    def named_metrics(self) -> set[str]:
        return {self.significance_metric, *self.min_delta_vs_frozen}


POLICY_SECTIONS = {"retrieval": RetrievalPolicy}
"""The gate policy section(s) this task type adds to ``gate:`` (``retrain.config.GatePolicy``), by name."""


def paired_bootstrap_mean(
    a: np.ndarray, b: np.ndarray, resamples: int, confidence: float, seed: int
) -> dict[str, float]:
    """Percentile CI of mean(a − b) when the queries are resampled with replacement (pairs kept together).

    Resampling n queries is a multinomial draw of how often each is taken, so a resample's mean
    is weights · d / n; the work is resamples × n, done in chunks to bound memory."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 4_000_000 // max(n, 1))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        means[start : start + size] = rng.multinomial(n, np.full(n, 1.0 / n), size=size) @ d / n
    alpha = (1 - confidence) / 2
    lower, upper = np.quantile(means, [alpha, 1 - alpha])
    return {
        "delta": float(d.mean()),
        "lower": float(lower),
        "upper": float(upper),
        "resamples": resamples,
        "confidence": confidence,
    }


def criteria(policy: GatePolicy, metrics: dict[str, Any], has_champion: bool) -> list[dict[str, Any]]:
    """This task type's criteria, in the order gate.json lists them."""
    rule = policy.retrieval or RetrievalPolicy()
    challenger, baseline = metrics["challenger"], metrics["baseline"]
    results = [
        at_least(f"frozen.{m}", challenger[m] - baseline[m], margin, f"challenger − frozen encoder {m}")
        for m, margin in rule.min_delta_vs_frozen.items()
    ]
    if has_champion:
        results += deltas(policy, challenger, metrics["champion"])
        results.append(significance(policy, rule.significance_metric, metrics["paired"]))
    return results


def significance(policy: GatePolicy, metric: str, paired: dict[str, Any]) -> dict[str, Any]:
    """The paired bootstrap over queries of Δ ``metric`` against the champion: its lower bound must clear the margin."""
    return bootstrap_criterion(f"significance.{metric}", policy, metric, paired, "champion", policy.significance.margin)


def bootstrap_criterion(
    name: str,
    policy: GatePolicy,
    metric: str,
    paired: dict[str, Any],
    other: str,
    margin: float,
    label: str | None = None,
) -> dict[str, Any]:
    """The lower bound of the paired percentile bootstrap CI over queries of mean(challenger − ``other``) of the
    per-query
    ``metric`` must clear ``margin``; resamples, confidence and seed from ``gate.significance``."""
    sig = policy.significance
    a, b = np.asarray(paired["challenger"][metric]), np.asarray(paired[other][metric])
    ci = paired_bootstrap_mean(a, b, sig.resamples, sig.confidence, sig.seed)
    ok = ci["lower"] >= margin
    better, worse = int(np.sum(a > b)), int(np.sum(a < b))
    return criterion(
        name,
        round(ci["lower"], 6),
        margin,
        PASS if ok else FAIL,
        f"{sig.confidence:.0%} paired bootstrap CI over {len(a)} queries of Δ {metric} against the {label or other} "
        f"[{ci['lower']:+.4f}, {ci['upper']:+.4f}] (Δ {ci['delta']:+.4f}; {better} queries better, {worse} worse; "
        f"{sig.resamples} resamples); lower bound {'>=' if ok else '<'} margin {margin}",
    )


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) of each non-blank line of a JSON-lines file."""
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            yield line_no, json.loads(line)


def _unique_rows(path: Path, id_field: str, text_field: str) -> dict[str, int]:
    """id -> line of a golden file whose rows each have text and a unique id; SeedError naming file, line and rule."""
    from retrain.golden import SeedError

    ids: dict[str, int] = {}
    for line_no, row in _jsonl_rows(path):
        if not str(row.get(text_field, "")).strip():
            raise SeedError(f"{path}: line {line_no}: empty {text_field!r}; rule: every row has text")
        if row[id_field] in ids:
            raise SeedError(
                f"{path}: line {line_no}: {id_field} {row[id_field]!r} repeated (first on line {ids[row[id_field]]}); "
                "rule: ids are unique"
            )
        ids[row[id_field]] = line_no
    return ids


def _judged_queries(
    qrels_path: Path, queries: dict[str, int], passages: dict[str, int], source: Path, corpus_path: Path
) -> set[str]:
    """The queries with a relevant passage, once every qrels row names a known query and passage."""
    from retrain.golden import SeedError

    judged: set[str] = set()
    for line_no, row in _jsonl_rows(qrels_path):
        if row["query_id"] not in queries:
            raise SeedError(
                f"{qrels_path}: line {line_no}: query_id {row['query_id']!r} is not a query in {source}; rule: qrels "
                "name known queries"
            )
        if row["passage_id"] not in passages:
            raise SeedError(
                f"{qrels_path}: line {line_no}: passage_id {row['passage_id']!r} is not in {corpus_path}; rule: qrels "
                "name known passages"
            )
        if row.get("relevance", 0) > 0:
            judged.add(row["query_id"])
    return judged


def golden_files(config, source: Path) -> tuple[dict[str, bytes], int]:
    """A retrieval golden version: ``source`` (queries, ``{"key", "text"}`` per line) with ``corpus.jsonl``
    (``{"passage_id", "text"}``) and ``qrels.jsonl`` (``{"query_id", "passage_id", "relevance"}``) beside it,
    published byte for byte once every qrels row names a known query and passage and every query has a
    relevant passage; the example count is the number of queries. Errors name the file, the line and the rule."""
    from retrain.golden import SeedError

    corpus_path, qrels_path = source.parent / "corpus.jsonl", source.parent / "qrels.jsonl"
    for path in (corpus_path, qrels_path):
        if not path.is_file():
            raise SeedError(
                f"{path}: no such file; rule: a retrieval golden set is {source.name}, corpus.jsonl and qrels.jsonl "
                "side by side"
            )
    queries, passages = _unique_rows(source, "key", "text"), _unique_rows(corpus_path, "passage_id", "text")
    unjudged = sorted(set(queries) - _judged_queries(qrels_path, queries, passages, source, corpus_path))
    if unjudged:
        raise SeedError(
            f"{source}: line {queries[unjudged[0]]}: query {unjudged[0]!r} has no relevant passage in {qrels_path} "
            f"({len(unjudged)} such); rule: every golden query has one"
        )
    files = {
        "golden.jsonl": source.read_bytes(),
        "corpus.jsonl": corpus_path.read_bytes(),
        "qrels.jsonl": qrels_path.read_bytes(),
    }
    return files, len(queries)
