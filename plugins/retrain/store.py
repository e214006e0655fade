"""The local object store: a directory tree with the same keys as the S3 bucket.

Keys (DESIGN.md): ``raw/<model>/dt=YYYY-MM-DD/…``, ``datasets/<model>/<version>/…``,
``golden/<model>/<version>/…``, ``runs/<model>/<run_id>/…``, ``ledger/<model>.jsonl``.

Dataset versions, golden versions and ledger entries are write-once. Files are
published with exclusive create (``os.link`` of a finished temp file, which fails if
the target exists) and directories with an atomic rename of a finished temp tree;
a second write of the same key raises ``WriteOnceError`` and leaves the first intact.

``S3Store`` (``retrain.s3store``) has the same interface on S3. Both stores take a
version's content digest with ``content_digest`` over ``{relpath: sha256}`` and check it
with ``check_against_manifest``, so the same files get the same ``content_sha256`` and the
same verdict on either backend. Callers get their store from ``retrain.stores``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Union

from retrain.paths import store_root


class WriteOnceError(FileExistsError):
    """A write-once key already exists; the existing object was left untouched."""


class IntegrityError(ValueError):
    """Stored content does not match the hash its manifest recorded."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical_json(obj: Any) -> bytes:
    """The one JSON encoding used wherever a digest is taken."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


MANIFEST_NAME = "manifest.json"

FileSource = Union[bytes, Path]
"""What a version's file is published from: its bytes, or a local file to stream."""


def content_digest(files: Mapping[str, str]) -> str:
    """The content digest of a version: sha256 over the canonical JSON of ``{relpath: sha256}``.

    The one definition both stores use, so a version has the same ``content_sha256`` on
    disk and on S3; relpaths are POSIX, relative to the version root, manifest excluded.
    """
    return hashlib.sha256(canonical_json(dict(files))).hexdigest()


def tree_digest(root: Path, exclude: tuple[str, ...] = (MANIFEST_NAME,)) -> tuple[str, dict[str, str]]:
    """Digest of every file under ``root`` (relative path + content), and the per-file hashes."""
    files = {
        path.relative_to(root).as_posix(): sha256_file(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).as_posix() not in exclude
    }
    return content_digest(files), files


def check_relpath(relpath: str) -> str:
    """A file name inside a version: relative, POSIX, no ``..``, and never the manifest itself."""
    parts = relpath.split("/")
    if not relpath or relpath.startswith("/") or "\\" in relpath or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"invalid file name {relpath!r} in a version: must be a relative POSIX path without '..'")
    if relpath == MANIFEST_NAME:
        raise ValueError(f"{MANIFEST_NAME!r} is written by the publisher, not passed as a file")
    return relpath


def digest_sources(files: Mapping[str, FileSource]) -> tuple[str, dict[str, str]]:
    """``content_digest`` of files given as bytes or local paths, and the per-file hashes."""
    hashes = {
        check_relpath(name): hashlib.sha256(source).hexdigest() if isinstance(source, bytes) else sha256_file(Path(source))
        for name, source in sorted(files.items())
    }
    return content_digest(hashes), hashes


def check_against_manifest(
    manifest: Mapping[str, Any],
    actual: Mapping[str, str],
    name_of: Callable[[str], str],
    manifest_name: str,
    expected_content_sha256: str | None = None,
) -> str:
    """Compare stored files' hashes with what their manifest recorded; return the content digest.

    ``actual`` is ``{relpath: sha256}`` of what is stored now and ``name_of`` turns a relpath
    into the name an error shows (a path or an ``s3://`` URI). Raises ``IntegrityError``
    naming the first file that is missing, added or different, a manifest whose digest does
    not match its own file list, or content that differs from the caller's pin.
    """
    recorded = manifest.get("files", {})
    for name in sorted(set(recorded) | set(actual)):
        if name not in actual:
            raise IntegrityError(f"{name_of(name)}: listed in the manifest but missing")
        if name not in recorded:
            raise IntegrityError(f"{name_of(name)}: not listed in the manifest (added after publication)")
        if actual[name] != recorded[name]:
            raise IntegrityError(
                f"{name_of(name)}: sha256 {actual[name][:12]}… does not match the manifest's {recorded[name][:12]}… (tampered or corrupted)"
            )
    digest = content_digest(actual)
    if digest != manifest.get("content_sha256"):
        raise IntegrityError(f"{manifest_name}: content_sha256 does not match the files")
    if expected_content_sha256 and digest != expected_content_sha256:
        raise IntegrityError(
            f"{manifest_name}: content_sha256 {digest[:12]}… differs from the pinned {expected_content_sha256[:12]}…"
        )
    return digest


def check_pin_first(manifest: Mapping[str, Any], pinned_content_sha256: str | None, manifest_name: str) -> None:
    """Refuse a version whose manifest already disagrees with the pin, before any file is read."""
    if pinned_content_sha256 and manifest.get("content_sha256") != pinned_content_sha256:
        raise IntegrityError(
            f"{manifest_name}: content_sha256 {str(manifest.get('content_sha256'))[:12]}… differs from the pinned "
            f"{pinned_content_sha256[:12]}…"
        )


def require_golden_pin(key: str, pinned_content_sha256: str | None) -> None:
    """Golden reads are only allowed against a pinned hash (DESIGN.md: verify first, every read)."""
    if not (key == "golden" or key.startswith("golden/")):
        raise ValueError(f"{key}: not a golden key; golden reads are for golden/<model>/<version>")
    if not pinned_content_sha256:
        raise IntegrityError(f"{key}: refusing an unpinned golden read; rule: every golden read verifies the pinned content_sha256")


class Store(Protocol):
    """What every store offers (``LocalStore``, ``S3Store``); code that takes a store types it as this."""

    def uri(self, key: str) -> str: ...
    def key_of(self, location: str | Path) -> str: ...
    def local_file(self, key: str, scratch: Path) -> Path: ...
    def exists(self, key: str) -> bool: ...
    def read_bytes(self, key: str) -> bytes: ...
    def read_json(self, key: str) -> Any: ...
    def write_json(self, key: str, obj: Any) -> Any: ...
    def write_once_bytes(self, key: str, data: bytes) -> Any: ...
    def list_keys(self, prefix: str) -> list[str]: ...
    def list_objects(self, prefix: str) -> list[str]: ...
    def publish_version(self, key: str, files: Mapping[str, FileSource], manifest: dict[str, Any]) -> dict[str, Any]: ...
    def verify_version(self, key: str, expected_content_sha256: str | None = None) -> dict[str, Any]: ...
    def read_version(self, key: str, expected_content_sha256: str | None = None) -> tuple[dict[str, Any], dict[str, bytes]]: ...
    def read_golden(self, key: str, pinned_content_sha256: str) -> tuple[dict[str, Any], dict[str, bytes]]: ...
    def materialize_version(self, key: str, expected_content_sha256: str | None = None, dest: Path | None = None) -> Path: ...


class LocalStore:
    """Object store rooted at one directory (``RETRAIN_HOME``, default ``.retrain/``)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else store_root()

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
            raise ValueError(f"{location}: not in the store at {self.root}; rule: results are read from the run's own store") from None

    def local_file(self, key: str, scratch: Path) -> Path:
        """A local path holding ``key``'s bytes, for code that reads files (Spark): here, the file itself."""
        return self.path(key)

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

    def read_version(self, key: str, expected_content_sha256: str | None = None) -> tuple[dict[str, Any], dict[str, bytes]]:
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
        check_against_manifest(manifest, actual, lambda name: str(root / name), str(manifest_path), expected_content_sha256)
        return manifest, contents

    def read_golden(self, key: str, pinned_content_sha256: str) -> tuple[dict[str, Any], dict[str, bytes]]:
        """A golden version's manifest and files, refused unless they match the caller's pin."""
        require_golden_pin(key, pinned_content_sha256)
        return self.read_version(key, pinned_content_sha256)

    def materialize_version(self, key: str, expected_content_sha256: str | None = None, dest: Path | None = None) -> Path:
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
