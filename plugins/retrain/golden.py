"""Golden sets: build a golden version's files from a labelled CSV, and pin a version's content hash
in its model's config (``bin/retrain golden pin <model>``).

Evaluation, the ETL's contamination removal and every other golden read refuse content
whose hash differs from the pin, so the pin must come from a golden version that verifies,
never from a hash copied by hand. The config file is edited in place, one line, keeping
its comments and layout.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

from retrain.config import ConfigError, ModelConfig, load_config
from retrain.store import IntegrityError, Store

PIN_LINE = re.compile(r"^(?P<indent>[ \t]+)golden_sha256:[^\n#]*(?P<comment>#[^\n]*)?$", re.MULTILINE)
VERSION_LINE = re.compile(r"^(?P<indent>[ \t]+)golden_version:[^\n]*$", re.MULTILINE)


class PinError(ValueError):
    """The golden version cannot be pinned; the config was not changed."""


def pin(config_path: Path, store: Store, replace: bool = False) -> tuple[str, str | None]:
    """Write the verified content hash of the config's golden version into the config, from any store; returns (new,
    old)."""
    config = load_config(config_path)
    key = f"golden/{config.name}/{config.data.golden_version}"
    if not store.exists(key):
        raise PinError(
            f"{store.uri(key)}: golden {config.data.golden_version} does not exist; seed or publish it first"
        )
    try:
        content_sha256 = store.verify_version(key)["content_sha256"]
    except IntegrityError as exc:
        raise PinError(
            f"refusing to pin golden {config.data.golden_version} of {config.name}: its manifest does not verify: {exc}"
        ) from None
    old = config.data.golden_sha256
    if old == content_sha256:
        return content_sha256, old
    if old is not None and not replace:
        raise PinError(
            f"{config_path}: field 'data.golden_sha256' pins {old}, but golden {config.data.golden_version} at "
            f"{store.uri(key)} "
            f"holds {content_sha256}; a golden version is immutable, so one of them is not the set you think. "
            "Pass --replace only if this store's version is the one to trust."
        )
    original = text = config_path.read_text()
    value = f'golden_sha256: "{content_sha256}"'  # quoted: YAML would read an all-digit hash as a number
    if PIN_LINE.search(text):
        text = PIN_LINE.sub(
            lambda m: f"{m['indent']}{value}" + (f"  {m['comment']}" if m["comment"] else ""), text, count=1
        )
    else:
        match = VERSION_LINE.search(text)
        if match is None:
            raise PinError(f"{config_path}: no 'golden_version:' line under data to pin beside")
        text = (
            text[: match.end()]
            + f"\n{match['indent']}{value}  # pinned: any other content is refused"
            + text[match.end() :]
        )
    config_path.write_text(text)
    try:
        if load_config(config_path).data.golden_sha256 != content_sha256:
            raise ConfigError("the pin did not read back")
    except ConfigError as exc:
        config_path.write_text(original)  # never leave a config broken
        raise PinError(f"{config_path}: the pinned config did not validate ({exc}); the file was restored") from None
    return content_sha256, old


class SeedError(ValueError):
    """The sample data or the seed request breaks a rule; nothing was written."""


def normalized_key(text: str) -> str:
    """sha256 of lower-cased text without punctuation or repeated whitespace (the dedupe key)."""
    norm = re.sub(r"\s+", " ", re.sub(r"[^\w\s]", "", text.lower())).strip()
    return hashlib.sha256(norm.encode()).hexdigest()


def read_rows(path: Path, text_column: str, label_column: str) -> list[tuple[str, str]]:
    """(text, label) rows of a sample CSV; a leading UTF-8 byte-order mark (Excel) is ignored."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in (text_column, label_column) if c not in (reader.fieldnames or [])]
        if missing:
            raise SeedError(
                f"{path}: row 1 (header): missing column(s) {missing}; rule: the sample has the config's text and "
                "label columns"
            )
        return [(row[text_column], row[label_column]) for row in reader]


def classification_golden(config: ModelConfig, source: Path) -> tuple[dict[str, bytes], int]:
    """A text_classification golden version from a CSV: ``golden.jsonl`` of ``golden_rows``, and the example count."""
    rows = golden_rows(config, source)
    return {
        "golden.jsonl": "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode("utf-8")
    }, len(rows)


def golden_rows(config: ModelConfig, source: Path) -> list[dict]:
    """The golden examples in key order; the key identifies an example (paired statistics join on it)."""
    labels = config.data.labels()
    label_id = {name: i for i, name in enumerate(labels)}
    lines, seen = [], {}
    for line_no, (text, label) in enumerate(
        read_rows(source, config.data.text_column, config.data.label_column), start=2
    ):
        if label not in label_id:
            raise SeedError(f"{source}: line {line_no}: label {label!r} is not one of the {len(labels)} allowed labels")
        # Golden sets may hold texts that normalise alike, so the occurrence number keeps keys unique.
        base = normalized_key(text)[:24]
        seen[base] = seen.get(base, -1) + 1
        lines.append({"key": f"{base}-{seen[base]}", "text": text, "label": label, "label_id": label_id[label]})
    return sorted(lines, key=lambda row: (row["key"], row["text"]))
