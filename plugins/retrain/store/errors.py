"""What a store refuses with: the errors every store (local or S3) raises, and the config error of ``get_store``."""

from __future__ import annotations


class WriteOnceError(FileExistsError):
    """A write-once key already exists; the existing object was left untouched."""


class IntegrityError(ValueError):
    """Stored content does not match the hash its manifest recorded."""


class StoreConfigError(ValueError):
    """The environment does not say which store to use; names the variable to set."""
