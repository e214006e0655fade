"""The local object store: a directory tree with the same keys as the S3 buckets.

Dataset versions, golden versions and ledger entries are write-once. Files are
published with exclusive create (``os.link`` of a finished temp file, which fails if
the target exists) and directories with an atomic rename of a finished temp tree;
a second write of the same key raises ``WriteOnceError`` and leaves the first intact.
It can also append lines to one file under an exclusive lock (``can_append``), which the
ledger uses for its one ``.jsonl`` per model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from retrain.locks import exclusive
from retrain.paths import store_root
from retrain.store.digest import (
    MANIFEST_NAME,
    FileSource,
    GoldenReads,
    check_against_manifest,
    check_pin_first,
    check_relpath,
    tree_digest,
)
from retrain.store.errors import IntegrityError, WriteOnceError


class LocalStore(GoldenReads):
    """Object store rooted at one directory (``RETRAIN_HOME``, default ``.retrain/``)."""

    can_append = True

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else store_root()

    def job_argument(self) -> str:
        """What a job gets as ``--store-root`` to rebuild this store (``retrain.store.store_for``)."""
        return str(self.root)

    @contextmanager
    def append_locked(self, key: str) -> Iterator[Any]:
        """Hold ``key``'s exclusive append lock (a ``.<name>.lock`` beside it; readers never block) and yield
        an ``append(data: bytes)`` that adds to ``key`` and syncs it to disk."""
        target = self.path(key)
        lock_path = target.with_name(f".{target.stem}.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)

        def append(data: bytes) -> None:
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

        with exclusive(lock_path):
            yield append

    def path(self, key: str) -> Path:
        """Filesystem path of a key; keys never escape the root."""
        if key.startswith("/") or ".." in Path(key).parts:
            raise ValueError(f"invalid store key {key!r}")
        return self.root / key

    def uri(self, key: str) -> str:
        """Where ``key`` lives, for messages and job arguments: here, its local path."""
        return str(self.path(key))

    def key_of(self, location: str | Path) -> str:
        """The key of a location this store handed out (``uri``); ValueError for one outside the root."""
        try:
            return Path(location).resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            raise ValueError(
                f"{location}: not in the store at {self.root}; rule: results are read from the run's own store"
            ) from None

    def local_file(self, key: str, scratch: Path) -> Path:
        """A local path holding ``key``'s bytes, for code that reads files (Spark): here, the file itself."""
        return self.path(key)

    def stored_sha256(self, key: str) -> str | None:
        """None: a file system keeps no checksum of its own; reading a local file is cheap."""
        return None

    def exists(self, key: str) -> bool:
        """Whether ``key`` is a file or a directory (a published version) in the store."""
        return self.path(key).exists()

    def read_bytes(self, key: str) -> bytes:
        """The bytes of one file; FileNotFoundError names the path when it is absent."""
        return self.path(key).read_bytes()

    def read_json(self, key: str) -> Any:
        """One JSON file, parsed."""
        return json.loads(self.path(key).read_text())

    def write_json(self, key: str, obj: Any) -> Path:
        """Overwritable write (run scratch only), made atomic by a rename."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, target)
        return target

    def write_once_bytes(self, key: str, data: bytes) -> Path:
        """Create ``key`` with ``data``; refuse if it exists (exclusive create, atomic)."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp_name, target)
            except FileExistsError:
                raise WriteOnceError(f"{target}: already exists and is write-once; refusing to overwrite") from None
        finally:
            os.unlink(tmp_name)
        return target

    def staging_dir(self, key: str) -> Path:
        """A fresh temp directory beside ``key``'s final location, for building a version."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.staging."))
        staging.chmod(0o755)  # mkdtemp makes it 0700; published versions must be readable by every job
        return staging

    def publish_dir(self, staging: Path, key: str) -> Path:
        """Atomically rename a finished staging tree to ``key``; refuse if ``key`` exists."""
        target = self.path(key)
        if target.exists():
            shutil.rmtree(staging, ignore_errors=True)
            raise WriteOnceError(f"{target}: version already exists and is write-once; refusing to overwrite")
        try:
            os.rename(staging, target)  # fails with ENOTEMPTY if a concurrent writer won the race
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise WriteOnceError(f"{target}: version already exists and is write-once ({exc.strerror})") from None
        return target

    def list_keys(self, prefix: str) -> list[str]:
        """Immediate children of a prefix, sorted, hidden staging entries excluded."""
        base = self.path(prefix)
        if not base.is_dir():
            return []
        return sorted(f"{prefix.rstrip('/')}/{p.name}" for p in base.iterdir() if not p.name.startswith("."))

    def list_objects(self, prefix: str) -> list[str]:
        """The files directly under a prefix, sorted, hidden ones excluded: ``list_keys`` without the directories."""
        return [key for key in self.list_keys(prefix) if self.path(key).is_file()]

    def publish_version(self, key: str, files: Mapping[str, FileSource], manifest: dict[str, Any]) -> dict[str, Any]:
        """Publish a write-once version from ``{relpath: bytes | Path}``; returns the manifest written.

        The same call as ``S3Store.publish_version``: staged beside the target, hashed,
        manifest added, then renamed into place in one step.
        """
        staging = self.staging_dir(key)
        try:
            for name, source in sorted(files.items()):
                target = staging / check_relpath(name)
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(source, bytes):
                    target.write_bytes(source)
                else:
                    shutil.copyfile(source, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return write_manifest_and_publish(self, staging, key, manifest)

    def verify_version(self, key: str, expected_content_sha256: str | None = None) -> dict[str, Any]:
        """``verify_tree`` of a published version; returns its manifest."""
        return verify_tree(self.path(key), expected_content_sha256)

    def read_version(
        self, key: str, expected_content_sha256: str | None = None
    ) -> tuple[dict[str, Any], dict[str, bytes]]:
        """A version's manifest and files, hashed from the very bytes returned, checked before return."""
        root = self.path(key)
        manifest_path = root / MANIFEST_NAME
        if not manifest_path.is_file():
            raise IntegrityError(f"{manifest_path}: manifest missing")
        manifest = json.loads(manifest_path.read_text())
        check_pin_first(manifest, expected_content_sha256, str(manifest_path))
        contents = {
            path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*"))
            if path.is_file() and path.relative_to(root).as_posix() != MANIFEST_NAME
        }
        actual = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
        check_against_manifest(
            manifest, actual, lambda name: str(root / name), str(manifest_path), expected_content_sha256
        )
        return manifest, contents

    def materialize_version(
        self, key: str, expected_content_sha256: str | None = None, dest: Path | None = None
    ) -> Path:
        """A verified local directory holding the version, for jobs that read files: here, the version itself."""
        self.verify_version(key, expected_content_sha256)
        return self.path(key)


def write_manifest_and_publish(store: LocalStore, staging: Path, key: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Hash every file in ``staging``, add the hashes to ``manifest``, write it, publish the tree."""
    content_sha256, files = tree_digest(staging)
    manifest = {**manifest, "files": files, "content_sha256": content_sha256}
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    store.publish_dir(staging, key)
    return manifest


def verify_tree(root: Path, expected_content_sha256: str | None = None) -> dict[str, Any]:
    """Check every file under ``root`` against its manifest before anything reads it.

    Raises ``IntegrityError`` naming the file whose hash differs, a file missing or a
    file added; returns the manifest when all match.
    """
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise IntegrityError(f"{manifest_path}: manifest missing")
    manifest = json.loads(manifest_path.read_text())
    _, files = tree_digest(root)
    check_against_manifest(manifest, files, lambda name: str(root / name), str(manifest_path), expected_content_sha256)
    return manifest
