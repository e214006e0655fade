"""Seeding sample data is idempotent and never changes what exists."""

from __future__ import annotations

import pytest

from retrain.seed import main as seed_main
from retrain.store import WriteOnceError, verify_tree


def test_seed_twice_is_a_no_op_and_golden_verifies(store, monkeypatch):
    monkeypatch.setenv("RETRAIN_HOME", str(store.root))
    assert seed_main(["intent", "--weeks", "3", "--first-week", "2026-09-07"]) == 0
    before = {p: p.read_bytes() for p in store.root.rglob("*") if p.is_file()}
    assert seed_main(["intent", "--weeks", "3", "--first-week", "2026-09-07"]) == 0
    assert {p: p.read_bytes() for p in store.root.rglob("*") if p.is_file()} == before
    assert len(list(store.path("raw/intent").iterdir())) == 3
    assert verify_tree(store.path("golden/intent/v1"))["rows"] == 3080


def test_seed_refuses_to_change_an_existing_partition(store, monkeypatch):
    monkeypatch.setenv("RETRAIN_HOME", str(store.root))
    seed_main(["intent", "--weeks", "2", "--first-week", "2026-09-07"])
    part = store.path("raw/intent/dt=2026-09-07/part-00000.csv")
    part.write_text("text,category\nedited,card_arrival\n")
    with pytest.raises(WriteOnceError, match="different content"):
        seed_main(["intent", "--weeks", "2", "--first-week", "2026-09-07"])
    assert part.read_text() == "text,category\nedited,card_arrival\n"


def test_first_week_must_be_a_monday(store, monkeypatch, capsys):
    monkeypatch.setenv("RETRAIN_HOME", str(store.root))
    with pytest.raises(SystemExit):
        seed_main(["intent", "--first-week", "2026-09-08"])
    assert "is not a Monday" in capsys.readouterr().err
