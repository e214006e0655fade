"""Byte-reproducible archives: sorted entries, one fixed timestamp, fixed modes, no owner names.

Two builds of the same files give the same bytes, so an archive's digest names its content.
The timestamp is a constant (1980-01-01, the earliest a zip can hold) rather than the commit
date, so unchanged code keeps its archive bytes from one commit to the next.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

FIXED_EPOCH = 315532800  # 1980-01-01T00:00:00Z
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    return sha256_bytes(Path(path).read_bytes())


def write_zip(path: Path, files: dict[str, bytes]) -> None:
    """A zip of ``arcname -> bytes``, entries sorted, deflated, fixed time and mode."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100000 | FILE_MODE) << 16  # a regular file, rw-r--r--
            info.create_system = 3  # Unix, so the mode above is read back the same everywhere
            archive.writestr(info, files[name])


def write_tar_gz(path: Path, files: dict[str, bytes]) -> None:
    """A gzipped tar of ``arcname -> bytes``: sorted, fixed mtime, mode 0644, uid/gid 0, no names, no gzip time."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(files[name]), FIXED_EPOCH, FILE_MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            archive.addfile(info, io.BytesIO(files[name]))
    with open(path, "wb") as out, gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())


def tree_digest(files: dict[str, bytes]) -> str:
    """sha256 over the sorted (name, content sha256) pairs: the digest of a set of files."""
    listing = "".join(f"{name}\0{sha256_bytes(files[name])}\n" for name in sorted(files))
    return sha256_bytes(listing.encode())
