"""The promotion ledger: who made which version champion, when and why.

Append-only and hash-chained: each entry records the previous entry's hash and its own
hash over its canonical JSON, so ``verify`` detects any edit, deletion, insertion or
reordering. Entries are appended after the existing chain has been verified, and nothing
is ever rewritten. Plain Python, no Airflow.

The chain logic is one; where the entries live depends on the store:

- a store that can append under a lock (``can_append``, the local store): one file
  ``ledger/<model>.jsonl``, appended under an exclusive lock.
- a store that cannot (``S3Store``): one object per entry, ``ledger/<model>/<seq:08d>.json``,
  each created with a write-once PUT (``IfNoneMatch="*"``). There is no lock on S3; the
  conditional PUT is the arbiter. Two appends that verified the same head both try the
  same ``seq``; S3 lets one create it and refuses the other, which gets ``LedgerError``
  and writes nothing (it decided against a head that is no longer the head, so it must
  re-read rather than be chained on blindly).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from retrain.store import Store, WriteOnceError, canonical_json

GENESIS = "0" * 64
CHAMPION_ACTIONS = ("promote", "rollback")
"""Entries that change the champion: ``to_version`` is the new champion."""
STAGE_ACTIONS = ("shadow", "canary", "auto_rollback", "inconclusive")
"""Deployment stages of a challenger (``to_version``) while the champion (``from_version``) keeps the alias: it went
into shadow, into canary, was rolled back automatically, or its window could not decide. They carry the observed
``figures``."""
ACTIONS = CHAMPION_ACTIONS + STAGE_ACTIONS
OBJECT_NAME = re.compile(r"^(?P<seq>\d{8})\.json$")


class LedgerError(ValueError):
    """The ledger's chain is broken (names the line or object and what is wrong), or a request is invalid."""


def entry_hash(entry: dict[str, Any]) -> str:
    """sha256 over the entry without its own ``hash`` field."""
    return hashlib.sha256(canonical_json({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def ledger_key(model: str) -> str:
    """Key of a model's ledger file on the local store."""
    return f"ledger/{model}.jsonl"


def ledger_prefix(model: str) -> str:
    """Prefix of a model's ledger objects on an object store: ``ledger/<model>/<seq:08d>.json``."""
    return f"ledger/{model}"


def entry_key(model: str, seq: int) -> str:
    """Key of one ledger entry on an object store."""
    return f"{ledger_prefix(model)}/{seq:08d}.json"


@dataclass(frozen=True)
class _Row:
    """One stored entry and how errors name it."""

    where: str  # the full location: "<path>: line 3" or "s3://…/00000003.json"
    label: str  # how the next entry refers to it: "line 3" or "00000003.json"
    entry: dict[str, Any]
    name_seq: int | None = None  # the seq an object's name claims (object layout only)


class _FileChain:
    """``ledger/<model>.jsonl`` on a store that can append under an exclusive lock (the local store)."""

    def __init__(self, store: Store, model: str) -> None:
        self.store, self.model, self.key = store, model, ledger_key(model)
        self._append = None

    def location(self) -> str:
        return self.store.uri(self.key)

    def load(self) -> list[_Row]:
        if not self.store.exists(self.key):
            return []
        rows, where = [], self.location()
        for number, line in enumerate(self.store.read_bytes(self.key).decode().splitlines(), start=1):
            try:
                rows.append(_Row(f"{where}: line {number}", f"line {number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise LedgerError(f"{where}: line {number}: not valid JSON ({exc.msg})") from None
        return rows

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self.store.append_locked(self.key) as append:  # one writer at a time; readers never block
            self._append = append
            try:
                yield
            finally:
                self._append = None

    def write(self, entry: dict[str, Any]) -> None:
        if self._append is None:
            raise RuntimeError("ledger entries are written only inside locked()")
        self._append((json.dumps(entry, sort_keys=True) + "\n").encode())


class _ObjectChain:
    """``ledger/<model>/<seq:08d>.json`` on an object store; each entry is a write-once object."""

    def __init__(self, store: Store, model: str) -> None:
        self.store, self.model = store, model

    def location(self) -> str:
        return self.store.uri(ledger_prefix(self.model))

    def load(self) -> list[_Row]:
        rows = []
        for key in self.store.list_keys(ledger_prefix(self.model)):  # sorted: zero-padded names sort by seq
            name = key.rpartition("/")[2]
            match = OBJECT_NAME.match(name)
            if match is None:
                raise LedgerError(
                    f"{self.store.uri(key)}: not a ledger entry name (expected <seq:08d>.json); rule: the ledger holds "
                    "entries only"
                )
            try:
                entry = json.loads(self.store.read_bytes(key))
            except json.JSONDecodeError as exc:
                raise LedgerError(f"{self.store.uri(key)}: not valid JSON ({exc.msg})") from None
            rows.append(_Row(self.store.uri(key), name, entry, int(match["seq"])))
        return rows

    def locked(self) -> AbstractContextManager[None]:
        return nullcontext()  # the conditional PUT in write() decides between concurrent appends

    def write(self, entry: dict[str, Any]) -> None:
        key = entry_key(self.model, entry["seq"])
        try:
            self.store.write_once_bytes(key, (json.dumps(entry, sort_keys=True) + "\n").encode())
        except WriteOnceError as exc:
            raise LedgerError(
                f"{self.store.uri(key)}: another append created entry {entry['seq']} first; this one was not written "
                f"(rule: ledger entries are write-once). Re-read the ledger and decide again. ({exc})"
            ) from exc


def _chain(store: Store, model: str) -> _FileChain | _ObjectChain:
    return _FileChain(store, model) if getattr(store, "can_append", False) else _ObjectChain(store, model)


def ledger_location(store: Store, model: str) -> str:
    """Where a model's ledger lives, for messages: the .jsonl path or the ``s3://`` prefix."""
    return _chain(store, model).location()


def _verify_rows(rows: list[_Row]) -> list[dict[str, Any]]:
    previous, previous_label = GENESIS, None
    for number, row in enumerate(rows, start=1):
        entry = row.entry
        if entry.get("seq") != number:
            raise LedgerError(
                f"{row.where}: seq is {entry.get('seq')}, expected {number} (entry deleted, inserted or reordered)"
            )
        if row.name_seq is not None and row.name_seq != number:
            raise LedgerError(
                f"{row.where}: named as entry {row.name_seq} but holds entry {number} (entry moved or renamed)"
            )
        if entry.get("prev_hash") != previous:
            link = f"{previous_label}'s hash" if previous_label else "the genesis hash"
            raise LedgerError(f"{row.where}: prev_hash does not match {link} (chain broken)")
        if entry_hash(entry) != entry.get("hash"):
            raise LedgerError(f"{row.where}: hash does not match the entry's content (entry edited)")
        previous, previous_label = entry["hash"], row.label
    return [row.entry for row in rows]


def read_entries(store: Store, model: str) -> list[dict[str, Any]]:
    """All ledger entries of a model, oldest first (empty when nothing was ever promoted)."""
    return [row.entry for row in _chain(store, model).load()]


def verify(store: Store, model: str) -> list[dict[str, Any]]:
    """Check the whole chain; raises LedgerError at the first broken link, returns the entries."""
    return _verify_rows(_chain(store, model).load())


def champion_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries that changed the champion (promotions and rollbacks), oldest first."""
    return [e for e in entries if e["action"] in CHAMPION_ACTIONS]


def serving_champion(entries: list[dict[str, Any]]) -> int | None:
    """The champion version by the ledger: the newest promotion's or rollback's ``to_version``, or None."""
    changes = champion_entries(entries)
    return changes[-1]["to_version"] if changes else None


def current_champion(store: Store, model: str) -> dict[str, Any] | None:
    """The newest entry that changed the champion (a promotion or a rollback) names the serving champion, or None."""
    changes = champion_entries(read_entries(store, model))
    return changes[-1] if changes else None


def previous_champion(entries: list[dict[str, Any]]) -> int | None:
    """The champion that served before the current one: the default rollback target."""
    changes = champion_entries(entries)
    return changes[-1]["from_version"] if changes else None


class NoRollbackTarget(ValueError):
    """The rollback asked for has no valid target: no champion yet, or a version that never served or serves now."""


def rollback_target(model: str, entries: list[dict[str, Any]], target: int | None) -> tuple[int, dict[str, Any]]:
    """The version a rollback goes to (``target``, or by default the champion before the current one) and the ledger
    entry that made it champion; NoRollbackTarget, naming what the ledger allows, when there is none."""
    current = serving_champion(entries)
    if current is None:
        raise NoRollbackTarget(f"{model} has never had a champion; nothing to roll back")
    target = previous_champion(entries) if target is None else int(target)
    served = {e["to_version"]: e for e in champion_entries(entries)}
    if target is None or target not in served or target == current:
        raise NoRollbackTarget(
            f"{model}: v{target} cannot be rolled back to (champions in the ledger: "
            f"{', '.join(f'v{v}' for v in sorted(served))}; serving v{current}); nothing was changed"
        )
    return target, served[target]


def append(
    store: Store,
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
    archive_sha256: str | None = None,
    figures: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Append one entry after verifying the chain; returns the entry written.

    ``archive_sha256`` (aws): the sha256 of the model.tar.gz at ``model_dir``, which the Airflow
    worker can check without loading weights; recorded only when given, so older chains hash as before."""
    if action not in ACTIONS:
        raise LedgerError(f"action must be one of {ACTIONS}, got {action!r}")
    if not actor or not reason:
        raise LedgerError("every ledger entry needs an actor and a reason")
    chain = _chain(store, model)
    with chain.locked():
        entries = _verify_rows(chain.load())
        entry = {
            "seq": len(entries) + 1,
            "time": (now or datetime.now(UTC)).isoformat(),
            "model": model,
            "action": action,
            "from_version": serving_champion(entries),
            "to_version": int(to_version),
            "actor": actor,
            "reason": reason,
            "gate_digest": gate_digest,
            "run_id": run_id,
            "model_dir": model_dir,
            "weights_digest": weights_digest,
            "prev_hash": entries[-1]["hash"] if entries else GENESIS,
        }
        if archive_sha256:
            entry["archive_sha256"] = archive_sha256
        if figures is not None:  # deployment stages only: older chains hash as before
            entry["figures"] = figures
        entry["hash"] = entry_hash(entry)
        chain.write(entry)
    return entry
