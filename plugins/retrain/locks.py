"""One exclusive file lock for every process of this project that must not do a thing twice at once: two jobs creating
the same cache entry, two first users migrating the same MLflow database, two writers appending to one ledger."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created, with its directory, when missing) for the block. The
    kernel drops it when the holder dies, so a killed holder never leaves it held."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
