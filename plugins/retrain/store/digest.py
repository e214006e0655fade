"""Content digests: one definition of a file's, a version's and a manifest's hash, shared by every store.

Both stores take a version's content digest with ``content_digest`` over ``{relpath: sha256}`` and
check it with ``check_against_manifest``, so the same files get the same ``content_sha256`` and the
same verdict on disk and on S3.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from retrain.store.errors import IntegrityError


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

FileSource = bytes | Path
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
        check_relpath(name): hashlib.sha256(source).hexdigest()
        if isinstance(source, bytes)
        else sha256_file(Path(source))
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
                f"{name_of(name)}: sha256 {actual[name][:12]}… does not match the manifest's {recorded[name][:12]}… "
                "(tampered or corrupted)"
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
    """Golden reads are only allowed against a pinned hash (rule: verify first, on every read)."""
    if not (key == "golden" or key.startswith("golden/")):
        raise ValueError(f"{key}: not a golden key; golden reads are for golden/<model>/<version>")
    if not pinned_content_sha256:
        raise IntegrityError(
            f"{key}: refusing an unpinned golden read; rule: every golden read verifies the pinned content_sha256"
        )


class GoldenReads:
    """``read_golden`` for a store that has ``read_version``: the one rule both stores follow for golden sets."""

    def read_golden(self, key: str, pinned_content_sha256: str) -> tuple[dict[str, Any], dict[str, bytes]]:
        """A golden version's manifest and files, refused unless they match the caller's pin."""
        require_golden_pin(key, pinned_content_sha256)
        return self.read_version(key, pinned_content_sha256)
