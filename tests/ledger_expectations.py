"""What a ledger filled by the tiers' ``filled`` fixtures holds, for both storage layouts (file and S3)."""

from __future__ import annotations

from retrain import ledger

FILLED = [
    (1, "promote", None, 1, "alice"),
    (2, "promote", 1, 2, "alice"),
    (3, "promote", 2, 3, "carol"),
    (4, "rollback", 3, 2, "bob"),
]


def fill(store):
    """Three promotions, then a rollback to v2: the ledger the chain tests edit, on either layout."""
    for version, actor in ((1, "alice"), (2, "alice"), (3, "carol")):
        ledger.append(
            store,
            "intent",
            action="promote",
            to_version=version,
            actor=actor,
            reason=f"v{version} better",
            model_dir=f"/m{version}",
        )
    ledger.append(
        store, "intent", action="rollback", to_version=2, actor="bob", reason="v3 regressed in prod", model_dir="/m2"
    )
    return store


def assert_filled_chain(store) -> list[dict]:
    """The chain verifies, records who did what, and names the champion and its predecessor."""
    entries = ledger.verify(store, "intent")
    assert [(e["seq"], e["action"], e["from_version"], e["to_version"], e["actor"]) for e in entries] == FILLED
    assert entries[0]["prev_hash"] == ledger.GENESIS and entries[1]["prev_hash"] == entries[0]["hash"]
    assert ledger.current_champion(store, "intent")["to_version"] == 2
    assert ledger.previous_champion(entries) == 3
    return entries
