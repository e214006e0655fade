"""The ledger is hash-chained and append-only: any edit, deletion, insertion or reordering is detected."""

from __future__ import annotations

import json

import pytest

from ledger_expectations import assert_filled_chain, fill  # tests/ is on pytest's pythonpath
from retrain import ledger
from retrain.ledger import LedgerError


@pytest.fixture
def filled(store):
    return fill(store)


def lines(store):
    return store.path("ledger/intent.jsonl").read_text().splitlines()


def rewrite(store, new_lines):
    store.path("ledger/intent.jsonl").write_text("\n".join(new_lines) + "\n")


def test_chain_verifies_and_records_who_what_why(filled):
    assert_filled_chain(filled)


def edit_line(store, index: int, rehash: bool = False, **changes) -> None:
    """Change fields of one stored entry, optionally recomputing its own hash like a careful forger."""
    rows = lines(store)
    entry = {**json.loads(rows[index]), **changes}
    if rehash:
        entry["hash"] = ledger.entry_hash(entry)
    rows[index] = json.dumps(entry, sort_keys=True)
    rewrite(store, rows)


def test_edit_is_detected(filled):
    edit_line(filled, 1, actor="mallory")
    with pytest.raises(LedgerError, match="line 2: hash does not match"):
        ledger.verify(filled, "intent")


def test_edit_with_recomputed_hash_is_still_detected(filled):
    edit_line(filled, 1, rehash=True, reason="forged")
    with pytest.raises(LedgerError, match="line 3: prev_hash does not match"):
        ledger.verify(filled, "intent")


def test_deletion_is_detected(filled):
    rows = lines(filled)
    rewrite(filled, rows[:1] + rows[2:])
    with pytest.raises(LedgerError, match="line 2: seq is 3, expected 2"):
        ledger.verify(filled, "intent")


def test_deleting_the_last_entry_is_detected_against_a_known_head(filled):
    head = ledger.verify(filled, "intent")[-1]["hash"]
    rewrite(filled, lines(filled)[:-1])
    assert ledger.verify(filled, "intent")[-1]["hash"] != head  # a truncated chain verifies, but its head moved


def test_insertion_is_detected(filled):
    rows = lines(filled)
    forged = dict(json.loads(rows[0]), seq=2, to_version=9)
    forged["hash"] = ledger.entry_hash(forged)
    rewrite(filled, rows[:1] + [json.dumps(forged)] + rows[1:])
    with pytest.raises(LedgerError, match="line 2: prev_hash does not match line 1"):
        ledger.verify(filled, "intent")


def test_reordering_is_detected(filled):
    rows = lines(filled)
    rows[1], rows[2] = rows[2], rows[1]
    rewrite(filled, rows)
    with pytest.raises(LedgerError, match="line 2: seq is 3, expected 2"):
        ledger.verify(filled, "intent")


def test_appending_to_a_tampered_ledger_is_refused(filled):
    rows = lines(filled)
    rows[0] = rows[0].replace("alice", "mallory")
    rewrite(filled, rows)
    before = filled.path("ledger/intent.jsonl").read_text()
    with pytest.raises(LedgerError):
        ledger.append(filled, "intent", action="promote", to_version=5, actor="alice", reason="x", model_dir="/m5")
    assert filled.path("ledger/intent.jsonl").read_text() == before


def test_entries_need_actor_reason_and_a_known_action(store):
    with pytest.raises(LedgerError, match="actor and a reason"):
        ledger.append(store, "intent", action="promote", to_version=1, actor="", reason="x", model_dir="/m")
    with pytest.raises(LedgerError, match="action must be one of"):
        ledger.append(store, "intent", action="delete", to_version=1, actor="a", reason="x", model_dir="/m")
    assert ledger.read_entries(store, "intent") == []


def test_the_rollback_target_is_a_former_champion_that_does_not_serve_now(store):
    with pytest.raises(ledger.NoRollbackTarget, match="never had a champion"):
        ledger.rollback_target("m", [], None)
    for version in (1, 2):
        ledger.append(store, "m", action="promote", to_version=version, actor="a", reason="r", model_dir=f"d{version}")
    ledger.append(store, "m", action="shadow", to_version=3, actor="a", reason="r", model_dir="d3")
    entries = ledger.verify(store, "m")
    target, entry = ledger.rollback_target("m", entries, None)  # by default the champion before the current one
    assert (target, entry["model_dir"]) == (1, "d1")
    for refused in (2, 3):  # serving now; shadowed but never champion
        with pytest.raises(ledger.NoRollbackTarget, match=rf"v{refused} cannot be rolled back to .*serving v2"):
            ledger.rollback_target("m", entries, refused)
