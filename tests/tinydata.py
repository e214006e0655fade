"""Tiny real data shared by the test tiers (Banking77 rows from data/banking77, CC BY 4.0)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LABELS = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "pin_blocked"]


def tiny_channels(root: Path, train: int, validation: int) -> dict[str, Path]:
    """A train/validation split of 5 intents, ``train`` + ``validation`` examples each, as training channels."""
    by_label: dict[str, list[str]] = {label: [] for label in LABELS}
    with open(PROJECT_ROOT / "data" / "banking77" / "train.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["category"] in by_label and len(by_label[row["category"]]) < train + validation:
                by_label[row["category"]].append(row["text"])
    for split, rows in (("train", slice(0, train)), ("validation", slice(train, train + validation))):
        (root / split).mkdir()
        lines = [json.dumps({"text": t, "label": label}) for label in LABELS for t in by_label[label][rows]]
        (root / split / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    (root / "labels.json").write_text(json.dumps(LABELS))
    return {"train": root / "train", "validation": root / "validation", "labels": root / "labels.json"}
