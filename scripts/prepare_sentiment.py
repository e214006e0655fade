"""Derive the sentiment model's sample files from the UCI sentences in data/sentiment.

    python scripts/prepare_sentiment.py          # rewrites data/sentiment/{train,golden}.csv and labels.json

The three source files (amazon_cells, imdb, yelp; ``sentence<TAB>label``, 1 = positive) are
copied byte for byte beside their SOURCE.md. This script, run once when the data was added,
repairs Windows-1252 characters that were read as C1 controls, strips each sentence, maps 0/1 to negative/positive,
drops repeated sentences (same text after
lower-casing and removing punctuation: every copy goes when their labels disagree, else the
first is kept), and puts 20% of each (source, label) stratum into the golden set, chosen by a
hash of the normalised text, so the split is reproducible and needs no seed. Golden and
training rows share no normalised text. Output columns: ``text``, ``sentiment``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "sentiment"
SOURCES = ("amazon_cells", "imdb", "yelp")
LABELS = ["negative", "positive"]  # index order: label id 0 is negative, as in the source files
GOLDEN_SHARE = 0.2


def repair_c1(text: str) -> str:
    """C1 control characters (U+0080-U+009F) here are Windows-1252 bytes read as Latin-1 (U+0085 was '…',
    U+0096 '–'): map each back to its Windows-1252 character, so no text carries a line-breaking control."""
    return re.sub(r"[\x80-\x9f]", lambda m: bytes([ord(m.group())]).decode("cp1252", errors="replace"), text)


def normalized(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", "", text.lower())).strip()


def main() -> None:
    rows = []
    for source in SOURCES:
        lines = (
            (DATA / f"{source}_labelled.txt").read_text(encoding="utf-8").removesuffix("\n").split("\n")
        )  # not splitlines(): U+0085 is inside texts
        for line_no, line in enumerate(lines, 1):
            text, _, label = line.rpartition("\t")
            if label.strip() not in ("0", "1") or not text.strip():
                raise SystemExit(f"{source}_labelled.txt: line {line_no}: expected sentence<TAB>0|1, got {line!r}")
            rows.append((source, repair_c1(text).strip(), LABELS[int(label)]))
    by_key: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for row in rows:
        by_key[normalized(row[1])].append(row)
    kept = [group[0] for group in by_key.values() if len({label for _, _, label in group}) == 1]
    dropped = len(rows) - len(kept)
    strata: dict[tuple[str, str], list[tuple[str, str, str]]] = defaultdict(list)
    for row in kept:
        strata[(row[0], row[2])].append(row)
    golden, train = [], []
    for stratum in strata.values():
        ranked = sorted(stratum, key=lambda r: hashlib.sha256(normalized(r[1]).encode()).hexdigest())
        cut = round(len(ranked) * GOLDEN_SHARE)
        golden += ranked[:cut]
        train += ranked[cut:]
    for name, part in (("train", train), ("golden", golden)):
        with open(DATA / f"{name}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["text", "sentiment"])
            writer.writerows((text, label) for _, text, label in sorted(part, key=lambda r: (r[0], r[1])))
    (DATA / "labels.json").write_text(json.dumps(LABELS) + "\n")
    assert not {normalized(r[1]) for r in train} & {normalized(r[1]) for r in golden}
    print(f"{len(rows)} sentences, {dropped} repeats dropped, train {len(train)}, golden {len(golden)}")


if __name__ == "__main__":
    main()
