"""The promotion ledger ``ledger/<model>.jsonl``: who made which version champion, when and why."""

from __future__ import annotations

import json
from typing import Any

from retrain.store import LocalStore


def read_entries(store: LocalStore, model: str) -> list[dict[str, Any]]:
    """All ledger entries of a model, oldest first (empty when nothing was ever promoted)."""
    path = store.path(f"ledger/{model}.jsonl")
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def current_champion(store: LocalStore, model: str) -> dict[str, Any] | None:
    """The newest ledger entry (promotion or rollback), i.e. the serving champion, or None."""
    entries = read_entries(store, model)
    return entries[-1] if entries else None
