"""Build the retrieval data set of the embedding_adapter model from Banking77 (data/banking77, CC BY 4.0).

    python scripts/prepare_retrieval.py            # writes data/retrieval/ (deterministic: same input, same bytes)

Queries are Banking77 customer messages. The corpus has one passage per intent: the intent's
name in words and five example messages of that intent (taken from train.csv and never used
as queries). qrels come from the labels: a query is relevant (grade 1) to its intent's passage.

- ``corpus.jsonl``   {"passage_id", "text"}: 77 passages
- ``train.csv``      query,passage_id: the remaining train.csv messages (raw training pairs)
- ``golden.jsonl``   {"key", "text"}: golden queries, GOLDEN_PER_INTENT per intent from test.csv
- ``qrels.jsonl``    {"query_id", "passage_id", "relevance"}: the golden qrels

Selection is by a hash of the text, never by file order. Golden queries whose normalised text
also occurs among training queries or passage examples are skipped, so the golden set is
disjoint from everything a model trains on (the ETL removes overlaps again on its query key).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE, OUT = ROOT / "data" / "banking77", ROOT / "data" / "retrieval"
EXAMPLES_PER_PASSAGE = 5
GOLDEN_PER_INTENT = 10


def norm(text: str) -> str:
    """Lower-cased text without punctuation or repeated whitespace (the project's dedupe key, before hashing)."""
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", "", text.lower())).strip()


def digest(text: str) -> str:
    return hashlib.sha256(norm(text).encode()).hexdigest()


def by_intent(path: Path) -> dict[str, list[str]]:
    """Messages per intent, deduplicated on the normalised text, in hash order."""
    groups: dict[str, dict[str, str]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            groups.setdefault(row["category"], {}).setdefault(digest(row["text"]), row["text"].strip())
    return {intent: [texts[k] for k in sorted(texts)] for intent, texts in sorted(groups.items())}


def passage_text(intent: str, examples: list[str]) -> str:
    title = intent.replace("_", " ").capitalize()
    return f"{title}. Customers write, for example: " + " | ".join(examples)


def main() -> None:
    intents = json.loads((SOURCE / "categories.json").read_text())
    train, test = by_intent(SOURCE / "train.csv"), by_intent(SOURCE / "test.csv")
    corpus, pairs, seen = [], [], set()
    for intent in intents:
        examples, rest = train[intent][:EXAMPLES_PER_PASSAGE], train[intent][EXAMPLES_PER_PASSAGE:]
        corpus.append({"passage_id": f"p_{intent}", "text": passage_text(intent, examples)})
        pairs += [(text, f"p_{intent}") for text in rest]
        seen.update(norm(t) for t in train[intent])
    golden, qrels = [], []
    for intent in intents:
        chosen = [t for t in test[intent] if norm(t) not in seen][:GOLDEN_PER_INTENT]
        for text in chosen:
            key = f"q_{digest(text)[:16]}"
            golden.append({"key": key, "text": text})
            qrels.append({"query_id": key, "passage_id": f"p_{intent}", "relevance": 1})
    OUT.mkdir(exist_ok=True)
    (OUT / "corpus.jsonl").write_text(
        "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in corpus), encoding="utf-8"
    )
    # The labels file of the pipeline's raw contract (data.labels_file): a raw pair's passage_id must be one of these.
    (OUT / "passage_ids.json").write_text(
        json.dumps([p["passage_id"] for p in corpus], indent=1) + "\n", encoding="utf-8"
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["query", "passage_id"])
    writer.writerows(pairs)
    (OUT / "train.csv").write_text(buffer.getvalue(), encoding="utf-8")
    order = sorted(range(len(golden)), key=lambda i: golden[i]["key"])
    (OUT / "golden.jsonl").write_text(
        "".join(json.dumps(golden[i], ensure_ascii=False) + "\n" for i in order), encoding="utf-8"
    )
    (OUT / "qrels.jsonl").write_text("".join(json.dumps(qrels[i]) + "\n" for i in order), encoding="utf-8")
    print(f"{len(corpus)} passages, {len(pairs)} training pairs, {len(golden)} golden queries -> {OUT}")


if __name__ == "__main__":
    main()
