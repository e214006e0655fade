"""The promotion ledger ``ledger/<model>.jsonl``: who made which version champion, when and why.

Append-only and hash-chained: each entry records the previous entry's hash and its own
hash over its canonical JSON, so ``verify`` detects any edit, deletion, insertion or
reordering. Entries are appended under an exclusive lock after the existing chain has
been verified, and nothing is ever rewritten. Plain Python, no Airflow.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator

from retrain.store import LocalStore, canonical_json

GENESIS = "0" * 64
ACTIONS = ("promote", "rollback")


class LedgerError(ValueError):
    """The ledger's chain is broken (names the line and what is wrong), or a request is invalid."""


def entry_hash(entry: dict[str, Any]) -> str:
    """sha256 over the entry without its own ``hash`` field."""
    return hashlib.sha256(canonical_json({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def ledger_key(model: str) -> str:
    return f"ledger/{model}.jsonl"


def read_entries(store: LocalStore, model: str) -> list[dict[str, Any]]:
    """All ledger entries of a model, oldest first (empty when nothing was ever promoted)."""
    path = store.path(ledger_key(model))
    if not path.is_file():
        return []
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise LedgerError(f"{path}: line {number}: not valid JSON ({exc.msg})") from None
    return entries


def verify(store: LocalStore, model: str) -> list[dict[str, Any]]:
    """Check the whole chain; raises LedgerError at the first broken link, returns the entries."""
    path = store.path(ledger_key(model))
    entries = read_entries(store, model)
    previous = GENESIS
    for number, entry in enumerate(entries, start=1):
        if entry.get("seq") != number:
            raise LedgerError(f"{path}: line {number}: seq is {entry.get('seq')}, expected {number} (entry deleted, inserted or reordered)")
        if entry.get("prev_hash") != previous:
            raise LedgerError(f"{path}: line {number}: prev_hash does not match line {number - 1}'s hash (chain broken)")
        if entry_hash(entry) != entry.get("hash"):
            raise LedgerError(f"{path}: line {number}: hash does not match the entry's content (entry edited)")
        previous = entry["hash"]
    return entries


def current_champion(store: LocalStore, model: str) -> dict[str, Any] | None:
    """The newest ledger entry (a promotion or a rollback) names the serving champion, or None."""
    entries = read_entries(store, model)
    return entries[-1] if entries else None


def previous_champion(entries: list[dict[str, Any]]) -> int | None:
    """The champion that served before the current one: the default rollback target."""
    return entries[-1]["from_version"] if entries else None


@contextmanager
def _locked(store: LocalStore, model: str) -> Iterator[None]:
    lock_path = store.path(f"ledger/.{model}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one writer at a time; readers never block
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def append(
    store: LocalStore,
    model: str,
    *,
    action: str,
    to_version: int,
    actor: str,
    reason: str,
    model_dir: str,
    gate_digest: str | None = None,
    run_id: str | None = None,
    weights_digest: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Append one entry after verifying the chain; returns the entry written."""
    if action not in ACTIONS:
        raise LedgerError(f"action must be one of {ACTIONS}, got {action!r}")
    if not actor or not reason:
        raise LedgerError("every ledger entry needs an actor and a reason")
    with _locked(store, model):
        entries = verify(store, model)
        entry = {
            "seq": len(entries) + 1,
            "time": (now or datetime.now(timezone.utc)).isoformat(),
            "model": model,
            "action": action,
            "from_version": entries[-1]["to_version"] if entries else None,
            "to_version": int(to_version),
            "actor": actor,
            "reason": reason,
            "gate_digest": gate_digest,
            "run_id": run_id,
            "model_dir": model_dir,
            "weights_digest": weights_digest,
            "prev_hash": entries[-1]["hash"] if entries else GENESIS,
        }
        entry["hash"] = entry_hash(entry)
        path = store.path(ledger_key(model))
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    return entry
