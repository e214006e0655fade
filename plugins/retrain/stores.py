"""The one place that chooses the object store. Operators, jobs and the CLI ask here.

``get_store()`` follows ``RETRAIN_BACKEND``:

- ``local`` (the default): ``LocalStore`` rooted at ``RETRAIN_HOME`` (default ``.retrain/``).
- ``aws``: ``S3Store`` configured by
  - ``RETRAIN_S3_BUCKET`` (required): the bucket holding raw data, datasets, runs and the ledger;
  - ``RETRAIN_S3_PREFIX`` (optional, default none): a key prefix inside that bucket, so several
    deployments can share one bucket;
  - ``RETRAIN_GOLDEN_BUCKET`` (required): the bucket with Object Lock that holds ``golden/…``,
    under the same prefix. It may name the main bucket if that one has Object Lock.
  Region, credentials and endpoint come from boto3's usual environment (``AWS_REGION``,
  ``AWS_ENDPOINT_URL`` …); nothing here talks to AWS until the store is first used.

``store_for(root_or_uri)`` is for job scripts, which receive the store as ``--store-root``:
a local path gives a ``LocalStore``, ``s3://bucket/prefix`` an ``S3Store`` (golden bucket
from ``RETRAIN_GOLDEN_BUCKET``, else the same bucket). ``store_argument(store)`` is its
inverse, for the code that builds job arguments.
"""

from __future__ import annotations

import os
from pathlib import Path

from retrain.paths import store_root
from retrain.s3store import S3Store, parse_s3_uri
from retrain.store import LocalStore, Store

BACKENDS = ("local", "aws")


class StoreConfigError(ValueError):
    """The environment does not say which store to use; names the variable to set."""


def _required(name: str, backend: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise StoreConfigError(f"{name} is not set; RETRAIN_BACKEND={backend} needs it (see retrain/stores.py)")
    return value


def get_store() -> Store:
    """The store of the configured backend: LocalStore for ``local``, S3Store for ``aws``."""
    backend = os.environ.get("RETRAIN_BACKEND", "local").strip() or "local"
    if backend == "local":
        return LocalStore(store_root())
    if backend == "aws":
        return S3Store(
            bucket=_required("RETRAIN_S3_BUCKET", backend),
            prefix=os.environ.get("RETRAIN_S3_PREFIX", ""),
            golden_bucket=_required("RETRAIN_GOLDEN_BUCKET", backend),
        )
    raise StoreConfigError(f"RETRAIN_BACKEND={backend!r}: must be one of {BACKENDS}")


def store_for(root_or_uri: str | Path, golden_bucket: str | None = None) -> Store:
    """The store a job's ``--store-root`` names: a local directory or ``s3://bucket/prefix``."""
    text = str(root_or_uri)
    if text.startswith("s3://"):
        bucket, prefix = parse_s3_uri(text)
        return S3Store(bucket, prefix, golden_bucket=golden_bucket or os.environ.get("RETRAIN_GOLDEN_BUCKET") or None)
    if "://" in text:
        raise StoreConfigError(f"--store-root {text!r}: only local paths and s3:// URIs are stores")
    return LocalStore(Path(text))


def store_argument(store: Store) -> str:
    """What to pass a job as ``--store-root`` so that ``store_for`` rebuilds the same store."""
    if isinstance(store, S3Store):
        return store.root_uri
    if isinstance(store, LocalStore):
        return str(store.root)
    raise TypeError(f"{type(store).__name__}: not a store that jobs can be pointed at")
