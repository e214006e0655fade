"""The local object store: a directory tree with the same keys as the S3 bucket.

Keys (DESIGN.md): ``raw/<model>/dt=YYYY-MM-DD/…``, ``datasets/<model>/<version>/…``,
``golden/<model>/<version>/…``, ``runs/<model>/<run_id>/…``, ``ledger/<model>.jsonl``.

Dataset versions, golden versions and ledger entries are write-once. Files are
published with exclusive create (``os.link`` of a finished temp file, which fails if
the target exists) and directories with an atomic rename of a finished temp tree;
a second write of the same key raises ``WriteOnceError`` and leaves the first intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

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


def tree_digest(root: Path, exclude: tuple[str, ...] = ("manifest.json",)) -> tuple[str, dict[str, str]]:
    """Digest of every file under ``root`` (relative path + content), and the per-file hashes."""
    files = {
        path.relative_to(root).as_posix(): sha256_file(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).as_posix() not in exclude
    }
    return hashlib.sha256(canonical_json(files)).hexdigest(), files


class LocalStore:
    """Object store rooted at one directory (``RETRAIN_HOME``, default ``.retrain/``)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else store_root()

    def path(self, key: str) -> Path:
        """Filesystem path of a key; keys never escape the root."""
        if key.startswith("/") or ".." in Path(key).parts:
            raise ValueError(f"invalid store key {key!r}")
        return self.root / key

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def read_json(self, key: str) -> Any:
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


def write_manifest_and_publish(store: LocalStore, staging: Path, key: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Hash every file in ``staging``, add the hashes to ``manifest``, write it, publish the tree."""
    content_sha256, files = tree_digest(staging)
    manifest = {**manifest, "files": files, "content_sha256": content_sha256}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    store.publish_dir(staging, key)
    return manifest


def verify_tree(root: Path, expected_content_sha256: str | None = None) -> dict[str, Any]:
    """Check every file under ``root`` against its manifest before anything reads it.

    Raises ``IntegrityError`` naming the file whose hash differs, a file missing or a
    file added; returns the manifest when all match.
    """
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise IntegrityError(f"{manifest_path}: manifest missing")
    manifest = json.loads(manifest_path.read_text())
    content_sha256, files = tree_digest(root)
    recorded = manifest.get("files", {})
    for name in sorted(set(recorded) | set(files)):
        if name not in files:
            raise IntegrityError(f"{root / name}: listed in the manifest but missing")
        if name not in recorded:
            raise IntegrityError(f"{root / name}: not listed in the manifest (added after publication)")
        if files[name] != recorded[name]:
            raise IntegrityError(
                f"{root / name}: sha256 {files[name][:12]}… does not match the manifest's {recorded[name][:12]}… (tampered or corrupted)"
            )
    if content_sha256 != manifest.get("content_sha256"):
        raise IntegrityError(f"{manifest_path}: content_sha256 does not match the files")
    if expected_content_sha256 and content_sha256 != expected_content_sha256:
        raise IntegrityError(
            f"{manifest_path}: content_sha256 {content_sha256[:12]}… differs from the pinned {expected_content_sha256[:12]}…"
        )
    return manifest
