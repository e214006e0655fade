"""Build the golden set of the reranker model (cross_encoder_reranking) from data/retrieval (Banking77, CC BY 4.0).

    PYTHONPATH=include:plugins .venv-jobs/bin/python scripts/prepare_reranking.py   # writes data/reranking/

The reranker trains on data/retrieval's raw pairs (train.csv, passage_ids.json, corpus.jsonl, exactly as
embedding_adapter), and is judged on a fixed candidate list per golden query:

- ``golden.jsonl``     {"key", "text"}: QUERIES_PER_INTENT queries per intent of data/retrieval/golden.jsonl
                       (the first in key order, i.e. by text hash), so they are disjoint from the training
                       queries and the passage examples by that file's construction;
- ``corpus.jsonl``     data/retrieval/corpus.jsonl, byte for byte (the passages the candidates name);
- ``qrels.jsonl``      the chosen queries' rows of data/retrieval/qrels.jsonl;
- ``candidates.jsonl`` {"query_id", "passage_ids": [K], "scores": [K]}: the first stage's top K passages of the
                       whole corpus, best first: the frozen packaged MiniLM as a bi-encoder (mean pooling, L2
                       norm, retrain_jobs.tasks.cross_encoder_reranking.model.FirstStage), cosine rounded to 6 places,
                       ties in corpus order.

Computed once and published with the golden version, so the golden set is immutable and evaluation needs no
first-stage model. Deterministic: one thread, the same inputs and packages give the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from retrain_jobs.tasks.cross_encoder_reranking.model import FirstStage

ROOT = Path(__file__).resolve().parents[1]
SOURCE, OUT = ROOT / "data" / "retrieval", ROOT / "data" / "reranking"
QUERIES_PER_INTENT = 3
K = 10
MAX_SEQ_LENGTH = 128  # the bi-encoder's own limit (the first stage is not the reranker)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    torch.set_num_threads(1)
    queries = {q["key"]: q for q in jsonl(SOURCE / "golden.jsonl")}
    qrels = jsonl(SOURCE / "qrels.jsonl")
    corpus = jsonl(SOURCE / "corpus.jsonl")
    per_intent: dict[str, list[str]] = {}
    for row in sorted(qrels, key=lambda r: r["query_id"]):
        per_intent.setdefault(row["passage_id"], []).append(row["query_id"])
    chosen = sorted(q for ids in per_intent.values() for q in ids[:QUERIES_PER_INTENT])
    first = FirstStage("all-MiniLM-L6-v2", MAX_SEQ_LENGTH)
    cosines = (first.embed([queries[q]["text"] for q in chosen]) @ first.embed([p["text"] for p in corpus]).T).numpy()
    candidates = []
    for row, key in enumerate(chosen):
        rounded = np.round(cosines[row].astype(np.float64), 6)
        top = np.argsort(-rounded, kind="stable")[:K]
        candidates.append(
            {
                "query_id": key,
                "passage_ids": [corpus[j]["passage_id"] for j in top],
                "scores": [float(rounded[j]) for j in top],
            }
        )
    OUT.mkdir(exist_ok=True)
    (OUT / "golden.jsonl").write_text(
        "".join(json.dumps(queries[q], ensure_ascii=False) + "\n" for q in chosen), encoding="utf-8"
    )
    (OUT / "corpus.jsonl").write_bytes((SOURCE / "corpus.jsonl").read_bytes())
    keep = set(chosen)
    (OUT / "qrels.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in qrels if r["query_id"] in keep), encoding="utf-8"
    )
    (OUT / "candidates.jsonl").write_text("".join(json.dumps(c) + "\n" for c in candidates), encoding="utf-8")
    relevant = {r["query_id"]: r["passage_id"] for r in qrels}
    found = sum(relevant[c["query_id"]] in c["passage_ids"] for c in candidates)
    print(
        f"{len(chosen)} golden queries x top {K} of {len(corpus)} passages -> {OUT}; relevant passage among the "
        "candidates "
        f"for {found}/{len(chosen)}, first for "
        f"{sum(relevant[c['query_id']] == c['passage_ids'][0] for c in candidates)}"
    )


if __name__ == "__main__":
    main()
