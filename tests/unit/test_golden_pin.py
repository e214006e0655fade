"""`bin/retrain golden pin`: the hash comes from a verified golden version, never from a hand copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrain.config import load_config
from retrain.golden import PinError, pin
from retrain_tools.seed import publish_golden

INTENT = Path(__file__).resolve().parents[2] / "config" / "models" / "intent.yaml"


@pytest.fixture
def unpinned(tmp_path, store):
    """A copy of intent.yaml without a pin, and its golden v1 published from a tiny CSV."""
    text = "\n".join(line for line in INTENT.read_text().splitlines() if "golden_sha256" not in line) + "\n"
    path = tmp_path / "intent.yaml"
    path.write_text(text)
    source = tmp_path / "golden.csv"
    source.write_text("text,category\nwhere is my card,card_arrival\ni lost my card,lost_or_stolen_card\n")
    manifest, _ = publish_golden(store, load_config(path), source, "v1")
    return path, manifest


def test_pin_writes_the_verified_hash_and_keeps_the_rest(unpinned, store):
    path, manifest = unpinned
    before = path.read_text()
    new, old = pin(path, store)
    assert (new, old) == (manifest["content_sha256"], None)
    assert load_config(path).data.golden_sha256 == new
    assert [line for line in path.read_text().splitlines() if "golden_sha256" not in line] == before.splitlines()
    assert pin(path, store) == (new, new)  # again: nothing to change


def test_pin_refuses_a_golden_version_whose_manifest_does_not_verify(unpinned, store):
    path, _ = unpinned
    before = path.read_text()
    with open(store.path("golden/intent/v1/golden.jsonl"), "a") as handle:
        handle.write('{"key": "x", "text": "planted", "label": "card_arrival", "label_id": 0}\n')
    with pytest.raises(PinError, match="manifest does not verify"):
        pin(path, store)
    assert path.read_text() == before


def test_pin_refuses_to_replace_a_different_pin_unless_told(unpinned, store):
    path, manifest = unpinned
    path.write_text(
        path.read_text().replace("  golden_version: v1", "  golden_version: v1\n  golden_sha256: " + "f" * 64)
    )
    with pytest.raises(PinError, match="pins ffff"):
        pin(path, store)
    assert pin(path, store, replace=True) == (manifest["content_sha256"], "f" * 64)


def test_pin_refuses_a_missing_version(tmp_path, store):
    with pytest.raises(PinError, match="does not exist"):
        pin(INTENT, store)
