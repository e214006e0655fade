"""The object store: one protocol, two stores, one place that chooses between them.

Keys are the same on disk and on S3: ``raw/<model>/dt=YYYY-MM-DD/…``, ``datasets/<model>/<version>/…``,
``golden/<model>/<version>/…``, ``runs/<model>/<run_id>/…``, ``ledger/<model>…``. The package:

- here: the ``Store`` protocol, the errors (``errors.py``) and ``get_store``/``store_for``;
- ``local.py``: ``LocalStore``, a directory tree (exclusive create, atomic rename);
- ``s3.py``: ``S3Store``, three buckets (conditional writes, the manifest as the commit);
- ``layout.py``: which bucket holds a key, the one routing rule of the aws backend;
- ``digest.py``: file, version and manifest digests, shared by both stores.

Operators, jobs and the CLI ask ``get_store()`` for their store.

``get_store()`` follows ``RETRAIN_BACKEND``:

- ``local`` (the default): ``LocalStore`` rooted at ``RETRAIN_HOME`` (default ``.retrain/``).
- ``aws``: ``S3Store`` over the deployment's three buckets, each variable named after the
  ``aws:`` config field it must equal (and the stack output that feeds both):
  - ``RETRAIN_DATASET_BUCKET`` (required, ``aws.dataset_bucket``): ``raw/`` and ``datasets/``;
  - ``RETRAIN_ARTIFACT_BUCKET`` (required, ``aws.artifact_bucket``): ``runs/`` and ``ledger/``;
  - ``RETRAIN_GOLDEN_BUCKET`` (required, ``aws.golden_bucket``): ``golden/``, Object-Locked;
  - ``RETRAIN_KMS_KEY_ARN`` (``aws.kms_key_arn``): every object the store writes is SSE-KMS encrypted under it.
  Keys go to a bucket by ``retrain.store.layout``'s rule, the one the job request builders use,
  at the bucket root: there is no key prefix. Region, credentials and endpoint come from
  boto3's usual environment (``AWS_REGION``, ``AWS_ENDPOINT_URL`` …); nothing here talks to
  AWS until the store is first used.

``store_for(root_or_uri)`` is for job scripts, which receive the store as ``--store-root``:
a local path gives a ``LocalStore``; ``s3://<dataset bucket>`` an ``S3Store`` whose artifact
and golden buckets come from the arguments or ``RETRAIN_ARTIFACT_BUCKET`` and
``RETRAIN_GOLDEN_BUCKET``. ``store_argument(store)`` is its inverse, for the code that builds
job arguments.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from retrain.paths import store_root
from retrain.store.digest import (
    MANIFEST_NAME,
    FileSource,
    canonical_json,
    check_against_manifest,
    check_pin_first,
    check_relpath,
    content_digest,
    digest_sources,
    require_golden_pin,
    sha256_file,
    tree_digest,
)
from retrain.store.errors import IntegrityError, StoreConfigError, WriteOnceError
from retrain.store.local import LocalStore, verify_tree, write_manifest_and_publish
from retrain.store.s3 import S3Store, parse_s3_uri

__all__ = [
    "MANIFEST_NAME",
    "FileSource",
    "IntegrityError",
    "LocalStore",
    "S3Store",
    "Store",
    "StoreConfigError",
    "WriteOnceError",
    "canonical_json",
    "check_against_manifest",
    "check_pin_first",
    "check_relpath",
    "content_digest",
    "digest_sources",
    "get_store",
    "parse_s3_uri",
    "read_json_at",
    "require_golden_pin",
    "sha256_file",
    "store_argument",
    "store_for",
    "tree_digest",
    "verify_tree",
    "write_json_at",
    "write_manifest_and_publish",
]


class Store(Protocol):
    """What every store offers (``LocalStore``, ``S3Store``); code that takes a store types it as this."""

    def uri(self, key: str) -> str: ...
    def key_of(self, location: str | Path) -> str: ...
    def local_file(self, key: str, scratch: Path) -> Path: ...
    def exists(self, key: str) -> bool: ...
    def read_bytes(self, key: str) -> bytes: ...
    def read_json(self, key: str) -> Any: ...
    def stored_sha256(self, key: str) -> str | None: ...
    def write_json(self, key: str, obj: Any) -> Any: ...
    def write_once_bytes(self, key: str, data: bytes) -> Any: ...
    def list_keys(self, prefix: str) -> list[str]: ...
    def list_objects(self, prefix: str) -> list[str]: ...
    def publish_version(
        self, key: str, files: Mapping[str, FileSource], manifest: dict[str, Any]
    ) -> dict[str, Any]: ...
    def verify_version(self, key: str, expected_content_sha256: str | None = None) -> dict[str, Any]: ...
    def read_version(
        self, key: str, expected_content_sha256: str | None = None
    ) -> tuple[dict[str, Any], dict[str, bytes]]: ...
    def read_golden(self, key: str, pinned_content_sha256: str) -> tuple[dict[str, Any], dict[str, bytes]]: ...
    def materialize_version(
        self, key: str, expected_content_sha256: str | None = None, dest: Path | None = None
    ) -> Path: ...
    def job_argument(self) -> str: ...

    can_append: bool
    """Whether the store can append lines to one object under an exclusive lock (``append_locked``); a store
    that cannot (S3) keeps an append-only log as one write-once object per entry instead."""


BACKENDS = ("local", "aws")


def _required(name: str, needed_by: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise StoreConfigError(f"{name} is not set; {needed_by} needs it (see retrain/store/__init__.py)")
    return value


RETIRED_VARIABLES = {
    "RETRAIN_S3_BUCKET": "RETRAIN_DATASET_BUCKET and RETRAIN_ARTIFACT_BUCKET",
    "RETRAIN_S3_PREFIX": "nothing: keys sit at each bucket's root, where the IAM policies grant them",
}
"""Variables of the one-bucket layout; still set means a stale deployment, so they are refused, not ignored."""


def _refuse_retired() -> None:
    for name, replacement in RETIRED_VARIABLES.items():
        if os.environ.get(name, "").strip():
            raise StoreConfigError(
                f"{name} is set, but RETRAIN_BACKEND=aws no longer reads it (replaced by {replacement}); "
                "unset it (see retrain/store/__init__.py)"
            )


def _s3_store(
    dataset_bucket: str,
    artifact_bucket: str | None,
    golden_bucket: str | None,
    needed_by: str,
    kms_key_arn: str | None = None,
) -> S3Store:
    return S3Store(
        dataset_bucket=dataset_bucket,
        artifact_bucket=artifact_bucket or _required("RETRAIN_ARTIFACT_BUCKET", needed_by),
        golden_bucket=golden_bucket or _required("RETRAIN_GOLDEN_BUCKET", needed_by),
        kms_key_arn=kms_key_arn or os.environ.get("RETRAIN_KMS_KEY_ARN", "").strip() or None,
    )


def get_store() -> Store:
    """The store of the configured backend: LocalStore for ``local``, S3Store for ``aws``."""
    backend = os.environ.get("RETRAIN_BACKEND", "local").strip() or "local"
    if backend == "local":
        return LocalStore(store_root())
    if backend == "aws":
        _refuse_retired()
        needed_by = f"RETRAIN_BACKEND={backend}"
        return _s3_store(_required("RETRAIN_DATASET_BUCKET", needed_by), None, None, needed_by)
    raise StoreConfigError(f"RETRAIN_BACKEND={backend!r}: must be one of {BACKENDS}")


def store_for(
    root_or_uri: str | Path,
    artifact_bucket: str | None = None,
    golden_bucket: str | None = None,
    kms_key_arn: str | None = None,
) -> Store:
    """The store a job's ``--store-root`` names: a local directory or ``s3://<dataset bucket>``."""
    text = str(root_or_uri)
    if text.startswith("s3://"):
        bucket, prefix = parse_s3_uri(text)
        if prefix:
            raise StoreConfigError(
                f"--store-root {text!r}: an S3 store is named by its dataset bucket alone (s3://{bucket}); "
                "rule: keys sit at each bucket's root, with no prefix"
            )
        return _s3_store(bucket, artifact_bucket, golden_bucket, f"--store-root {text}", kms_key_arn)
    if "://" in text:
        raise StoreConfigError(f"--store-root {text!r}: only local paths and s3:// URIs are stores")
    return LocalStore(Path(text))


def store_argument(store: Store) -> str:
    """What to pass a job as ``--store-root`` so that ``store_for`` rebuilds the same store.

    For an S3Store that is ``s3://<dataset bucket>``; the job's environment must name the same
    artifact and golden buckets (``RETRAIN_ARTIFACT_BUCKET``, ``RETRAIN_GOLDEN_BUCKET``).
    """
    job_argument = getattr(store, "job_argument", None)
    if job_argument is None:
        raise TypeError(f"{type(store).__name__}: not a store that jobs can be pointed at")
    return job_argument()


def read_json_at(store: Store, location: str | Path) -> Any:
    """A JSON document a job was pointed at: an ``s3://`` URI of ``store``'s buckets, or a local file."""
    if str(location).startswith("s3://"):
        return store.read_json(store.key_of(location))
    return json.loads(Path(location).read_text())


def write_json_at(store: Store, location: str | Path, obj: Any) -> str:
    """Write a job's result JSON where it was told to: write-once to ``s3://`` (Glue), else a local file
    in the job's own claimed directory (the runner, a SageMaker container's output path)."""
    body = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
    if str(location).startswith("s3://"):
        store.write_once_bytes(store.key_of(location), body)
        return str(location)
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return str(path)
