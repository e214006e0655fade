"""Derive the llm_lora model's prompt -> JSON-response pairs from the UCI sentences in data/sentiment.

    python scripts/prepare_llm.py          # rewrites data/llm/{train,golden}.csv and responses.json

Deterministic, no seed: it reads data/sentiment/train.csv and golden.csv (already a disjoint split, see
data/sentiment/SOURCE.md) and finds each sentence's source file (amazon_cells, imdb, yelp) by its normalised
text in the three source files, as scripts/prepare_sentiment.py built them. Each row becomes
``prompt`` = the sentence and ``response`` = a compact two-field JSON object, keys in this order:

    {"sentiment": "negative", "source": "imdb"}

``responses.json`` lists every valid response of this closed schema (2 sentiments x 3 sources), the labels file
of the pipeline's raw contract. The golden set is 200 of the sentiment golden rows, stratified by (source,
sentiment): each stratum gives its share of 200 (largest remainders), its rows chosen by a hash of the
normalised text. The instruction that wraps the sentence is not part of the data: it is the task's
``prompt_template`` (config/models/llm_lora.yaml).
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from prepare_sentiment import normalized, repair_c1  # noqa: E402  (the same text repair and normalisation)

SENTIMENT = ROOT / "data" / "sentiment"
OUT = ROOT / "data" / "llm"
SOURCES = {"amazon_cells": "amazon", "imdb": "imdb", "yelp": "yelp"}
SENTIMENTS = ("negative", "positive")
GOLDEN_SIZE = 200


def response(sentiment: str, source: str) -> str:
    return json.dumps({"sentiment": sentiment, "source": source})


def source_of() -> dict[str, str]:
    """Normalised sentence -> its source name (a sentence found in two files keeps the first, as prepare_sentiment
    does)."""
    found: dict[str, str] = {}
    for stem, name in SOURCES.items():
        lines = (SENTIMENT / f"{stem}_labelled.txt").read_text(encoding="utf-8").removesuffix("\n").split("\n")
        for line in lines:
            text = repair_c1(line.rpartition("\t")[0]).strip()
            found.setdefault(normalized(text), name)
    return found


def read(path: Path, sources: dict[str, str]) -> list[tuple[str, str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [(row["text"], row["sentiment"], sources[normalized(row["text"])]) for row in csv.DictReader(handle)]
    return rows


def stratified(rows: list[tuple[str, str, str]], size: int) -> list[tuple[str, str, str]]:
    strata: dict[tuple[str, str], list] = defaultdict(list)
    for row in rows:
        strata[(row[2], row[1])].append(row)
    quotas = {k: len(v) * size / len(rows) for k, v in strata.items()}
    counts = {k: int(q) for k, q in quotas.items()}
    for k in sorted(quotas, key=lambda k: (-(quotas[k] - counts[k]), k))[: size - sum(counts.values())]:
        counts[k] += 1
    chosen = []
    for key in sorted(strata):
        ranked = sorted(strata[key], key=lambda r: hashlib.sha256(normalized(r[0]).encode()).hexdigest())
        chosen += ranked[: counts[key]]
    return chosen


def write(path: Path, rows: list[tuple[str, str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["prompt", "response"])
        writer.writerows(
            (text, response(sentiment, source))
            for text, sentiment, source in sorted(rows, key=lambda r: (r[2], r[1], r[0]))
        )


def main() -> None:
    sources = source_of()
    train = read(SENTIMENT / "train.csv", sources)
    golden = stratified(read(SENTIMENT / "golden.csv", sources), GOLDEN_SIZE)
    assert not {normalized(r[0]) for r in train} & {normalized(r[0]) for r in golden}
    OUT.mkdir(parents=True, exist_ok=True)
    write(OUT / "train.csv", train)
    write(OUT / "golden.csv", golden)
    (OUT / "responses.json").write_text(
        json.dumps([response(s, src) for s in SENTIMENTS for src in SOURCES.values()], indent=1) + "\n"
    )
    counts = defaultdict(int)
    for _, sentiment, source in golden:
        counts[(source, sentiment)] += 1
    print(
        f"train {len(train)}, golden {len(golden)}: "
        + ", ".join(f"{s}/{label} {n}" for (s, label), n in sorted(counts.items()))
    )


if __name__ == "__main__":
    main()
