"""The S3 object store: ``LocalStore``'s interface on a bucket, with the same keys.

Write-once is ``PutObject`` with ``IfNoneMatch="*"``: S3 answers 412 when the key exists
and the existing object is left as it was; that becomes ``WriteOnceError`` naming the
``s3://`` URI. (``S3Hook.load_*(replace=False)`` checks then puts, which is not atomic.)

A version (``datasets/<model>/<v>/``, ``golden/<model>/<v>/``) is published by
``publish_version``. S3 has no directory rename, so the manifest is the commit:

1. claim the version with a write-once marker ``<parent>/.<name>.publishing`` beside it,
   so a second publisher of the same key stops before it uploads anything;
2. upload every file write-once under ``<key>/``;
3. write ``<key>/manifest.json`` write-once, LAST; only now is the version published;
4. delete the marker.

A version without a manifest is not published: ``exists``, ``list_keys`` and every read
treat it as absent. A publish that fails removes what it uploaded; one that dies leaves
its marker, so ``pending_versions`` finds it, ``abandon_version`` removes it, and another
publish of that key is refused until then (with a message saying so).

Every key lives in one of three buckets, chosen by its first segment (``retrain.store.layout``,
the rule the job request builders use too): ``raw/`` and ``datasets/`` in the dataset bucket,
``runs/`` and ``ledger/`` in the artifact bucket, ``golden/`` in the golden bucket. The golden
bucket has Object Lock and a COMPLIANCE default retention set by the infrastructure, so a
stored version can never be deleted or replaced. S3 still lets anyone with PutObject add a
*new* current version on top, so every golden read (``read_golden``) checks the caller's pinned
``content_sha256`` against the manifest first and each object's bytes against the
manifest before it returns anything.

boto3 is imported here only, and lazily, so DAG parsing and the local backend never load it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retrain.store.digest import (
    MANIFEST_NAME,
    FileSource,
    GoldenReads,
    check_against_manifest,
    check_pin_first,
    check_relpath,
    digest_sources,
)
from retrain.store.errors import IntegrityError, WriteOnceError
from retrain.store.layout import S3Layout

PUBLISHING_SUFFIX = ".publishing"
_CHUNK = 1 << 20


def _client_error() -> type[Exception]:
    """botocore's ClientError, imported when an ``except`` clause first needs it."""
    from botocore.exceptions import ClientError

    return ClientError


def _code(exc: Exception) -> str:
    """The S3 error code of a ClientError (``NoSuchKey``, ``PreconditionFailed``, ``404``…)."""
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


# 412: the key exists. 409 ConditionalRequestConflict: another conditional write of the same
# key is in flight and S3 will let only one of them win, so this one has lost as well.
_LOST_WRITE_ONCE = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_ABSENT = {"NoSuchKey", "404", "NotFound"}


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ``("bucket", "some/prefix")``; ValueError names a malformed URI."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r}: not an s3:// URI")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r}: an s3:// URI needs a bucket name")
    return bucket, prefix.strip("/")


class S3Store(GoldenReads):
    """Object store over a deployment's dataset, artifact and golden buckets, keys routed by ``S3Layout``."""

    list_page_size = 1000
    """Keys per ListObjectsV2 page: S3's maximum; a test lowers it to exercise paging cheaply."""

    can_append = False  # no append on S3: an append-only log is one write-once object per entry

    def __init__(
        self,
        dataset_bucket: str,
        artifact_bucket: str,
        golden_bucket: str,
        client: Any = None,
        kms_key_arn: str | None = None,
    ) -> None:
        self.layout = S3Layout(
            dataset_bucket=dataset_bucket, artifact_bucket=artifact_bucket, golden_bucket=golden_bucket
        )
        self._client = client
        self.kms_key_arn = kms_key_arn  # every object the store writes is encrypted under it (SSE-KMS)

    def job_argument(self) -> str:
        """What a job gets as ``--store-root`` (``s3://<dataset bucket>``); its environment names the other two
        buckets."""
        return f"s3://{self.layout.dataset_bucket}"

    @property
    def client(self) -> Any:
        """The S3 client; created on first use so that constructing a store makes no AWS call."""
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")  # region, credentials and AWS_ENDPOINT_URL from the environment
        return self._client

    def __repr__(self) -> str:
        layout = self.layout
        return (
            f"S3Store(dataset={layout.dataset_bucket!r}, artifact={layout.artifact_bucket!r}, "
            f"golden={layout.golden_bucket!r})"
        )

    # -- addressing ---------------------------------------------------------------------------

    def _locate(self, key: str) -> tuple[str, str]:
        """(bucket, object key) of a store key; ValueError names a malformed key or one no bucket holds."""
        return self.layout.locate(key)

    def uri(self, key: str) -> str:
        """``s3://<bucket>/<key>`` of a store key: the same URI ``retrain.aws.locations.s3_uri`` builds."""
        return self.layout.uri(key)

    def key_of(self, location: str | Path) -> str:
        """The key of an ``s3://`` URI this store handed out; ValueError when its bucket is not the key's own."""
        bucket, key = parse_s3_uri(str(location))
        if not key or self.layout.bucket_of(key) != bucket:
            raise ValueError(
                f"{location}: not in this store ({self!r}); rule: results are read from the run's own buckets"
            )
        return key

    def stored_sha256(self, key: str) -> str | None:
        """The full-object SHA-256 S3 computed when ``key`` was written with ``ChecksumAlgorithm=SHA256`` (every write
        of this store; upstream producers: ``aws s3 cp --checksum-algorithm SHA256``), hex; None when it has none, or
        only a composite one (a multipart upload's checksum of part checksums, ``...-N``). One HEAD, no download."""
        import base64

        bucket, object_key = self._locate(key)
        head = self.client.head_object(Bucket=bucket, Key=object_key, ChecksumMode="ENABLED")
        value = head.get("ChecksumSHA256")
        if not value or "-" in value or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
            return None
        return base64.b64decode(value).hex()

    def sha256_of(self, key: str) -> str:
        """The sha256 of one object, streamed (a model.tar.gz is checked without holding it in memory)."""
        return self._stream_sha256(key)

    def local_file(self, key: str, scratch: Path) -> Path:
        """Download ``key`` to ``scratch/<key>`` (once) for code that reads files (Spark); returns that path."""
        target = Path(scratch) / check_relpath(key)
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.part")
            with open(partial, "wb") as sink:
                self._stream_sha256(key, sink)
            os.replace(partial, target)
        return target

    @staticmethod
    def _marker_key(key: str) -> str:
        """The publish-in-progress marker of a version, beside it: ``<parent>/.<name>.publishing``."""
        parent, _, name = key.rstrip("/").rpartition("/")
        return f"{parent}/.{name}{PUBLISHING_SUFFIX}" if parent else f".{name}{PUBLISHING_SUFFIX}"

    # -- single objects -----------------------------------------------------------------------

    def _object_exists(self, key: str) -> bool:
        bucket, object_key = self._locate(key)
        try:
            self.client.head_object(Bucket=bucket, Key=object_key)
        except _client_error() as exc:
            if _code(exc) in _ABSENT:
                return False
            raise
        return True

    def _any_under(self, key: str) -> bool:
        bucket, object_key = self._locate(key)
        listed = self.client.list_objects_v2(Bucket=bucket, Prefix=object_key + "/", MaxKeys=1)
        return bool(listed.get("KeyCount"))

    def _is_unpublished(self, key: str) -> bool:
        """A version whose publish started (marker) but never wrote its manifest."""
        return self._object_exists(self._marker_key(key)) and not self._object_exists(f"{key}/{MANIFEST_NAME}")

    def exists(self, key: str) -> bool:
        """Whether ``key`` is an object, or a prefix holding objects that is not an unpublished version."""
        if self._object_exists(key):
            return True
        return self._any_under(key) and not self._is_unpublished(key)

    def _get(self, key: str) -> Any:
        bucket, object_key = self._locate(key)
        try:
            return self.client.get_object(Bucket=bucket, Key=object_key)["Body"]
        except _client_error() as exc:
            if _code(exc) in _ABSENT:
                raise FileNotFoundError(f"{self.uri(key)}: no such object") from None
            raise

    def read_bytes(self, key: str) -> bytes:
        """The bytes of one object; FileNotFoundError names the URI when it is absent."""
        body = self._get(key)
        try:
            return body.read()
        finally:
            body.close()

    def read_json(self, key: str) -> Any:
        """One JSON object, parsed."""
        return json.loads(self.read_bytes(key))

    def _put(self, key: str, body: Any, content_type: str | None, write_once: bool) -> None:
        """Send ``put_request`` for ``key``, checked against S3's API model first (the request that is checked is the
        one that is sent)."""
        from retrain.aws.schema import validate_request

        bucket, object_key = self._locate(key)
        request = put_request(bucket, object_key, body, content_type, write_once, self.kms_key_arn)
        validate_request("s3", "PutObject", request)
        self.client.put_object(**request)

    def write_json(self, key: str, obj: Any) -> str:
        """Overwritable write (run scratch only); a PUT replaces an object atomically. Returns the URI."""
        body = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
        self._put(key, body, "application/json", write_once=False)
        return self.uri(key)

    def _put_once(self, key: str, body: Any, rule: str = "is write-once") -> str:
        try:
            self._put(key, body, None, write_once=True)
        except _client_error() as exc:
            if _code(exc) in _LOST_WRITE_ONCE:
                raise WriteOnceError(
                    f"{self.uri(key)}: already exists and {rule}; refusing to overwrite (S3 answered {_code(exc)})"
                ) from None
            raise
        return self.uri(key)

    def write_once_bytes(self, key: str, data: bytes) -> str:
        """Create ``key`` with ``data``; refuse if it exists (conditional PUT, atomic). Returns the URI."""
        return self._put_once(key, data)

    def _delete(self, key: str) -> None:
        # On a versioned bucket (the Object Lock golden bucket) this adds a delete marker and the
        # locked versions stay: retention is the infrastructure's promise, not ours to break.
        bucket, object_key = self._locate(key)
        self.client.delete_object(Bucket=bucket, Key=object_key)

    # -- listing ------------------------------------------------------------------------------

    def _list(self, prefix_key: str, delimiter: bool) -> Iterator[tuple[str, bool]]:
        """(store key, is_prefix) of what lies under ``prefix_key/``, page by page."""
        bucket, object_key = self._locate(prefix_key)
        base = object_key + "/"
        arguments = {"Bucket": bucket, "Prefix": base, **({"Delimiter": "/"} if delimiter else {})}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            **arguments, PaginationConfig={"PageSize": self.list_page_size}
        )
        for page in pages:
            for common in page.get("CommonPrefixes", []):
                yield common["Prefix"].rstrip("/"), True  # object keys are store keys: no prefix to strip
            for item in page.get("Contents", []):
                yield item["Key"], False

    def list_keys(self, prefix: str) -> list[str]:
        """Immediate children of a prefix, sorted; markers and unpublished versions excluded."""
        children, pending = set(), set()
        for key, _ in self._list(prefix, delimiter=True):
            name = key.rpartition("/")[2]
            if name.startswith(".") and name.endswith(PUBLISHING_SUFFIX):
                pending.add(name[1 : -len(PUBLISHING_SUFFIX)])
            elif not name.startswith("."):
                children.add(name)
        base = prefix.rstrip("/")
        # Only children with a marker need a HEAD: a marker outlives its publish only while the
        # publish runs, when it died, or in the instant between the manifest and the marker delete.
        hidden = {name for name in pending & children if not self._object_exists(f"{base}/{name}/{MANIFEST_NAME}")}
        return sorted(f"{base}/{name}" for name in children - hidden)

    def list_objects(self, prefix: str) -> list[str]:
        """The objects directly under a prefix, sorted, hidden ones excluded: ``list_keys`` without the sub-prefixes.

        One listing tells objects from prefixes, so no HEAD per key; raw partitions, the one
        caller, hold no versions, so there are no markers to honour here.
        """
        return sorted(
            key
            for key, is_prefix in self._list(prefix, delimiter=True)
            if not is_prefix and not key.rpartition("/")[2].startswith(".")
        )

    def pending_versions(self, prefix: str) -> list[str]:
        """Versions under ``prefix`` whose publish started and never wrote a manifest (running or dead)."""
        base = prefix.rstrip("/")
        pending = []
        for key, is_prefix in self._list(prefix, delimiter=True):
            name = key.rpartition("/")[2]
            if not is_prefix and name.startswith(".") and name.endswith(PUBLISHING_SUFFIX):
                version = f"{base}/{name[1 : -len(PUBLISHING_SUFFIX)]}"
                if not self._object_exists(f"{version}/{MANIFEST_NAME}"):
                    pending.append(version)
        return sorted(pending)

    def abandon_version(self, key: str) -> list[str]:
        """Remove an unpublished version's objects and marker; refuses a published one. Returns the keys removed.

        Only for a publish known to be dead (``pending_versions`` cannot tell a running one
        from a dead one): removing a running publish's files makes its manifest write fail
        the integrity check of every reader, never silently succeed.
        """
        if self._object_exists(f"{key}/{MANIFEST_NAME}"):
            raise WriteOnceError(
                f"{self.uri(key)}: is published (its manifest exists) and write-once; refusing to remove it"
            )
        removed = [object_key for object_key, _ in self._list(key, delimiter=False)]
        for object_key in removed:
            self._delete(object_key)
        if self._object_exists(self._marker_key(key)):
            self._delete(self._marker_key(key))
            removed.append(self._marker_key(key))
        return removed

    # -- versions -----------------------------------------------------------------------------

    def publish_version(self, key: str, files: Mapping[str, FileSource], manifest: dict[str, Any]) -> dict[str, Any]:
        """Publish a write-once version from ``{relpath: bytes | Path}``, manifest last; returns the manifest.

        Raises ``WriteOnceError`` naming the URI when the version exists or another publish
        of it holds the marker; nothing already stored is touched.
        """
        content_sha256, hashes = digest_sources(files)  # before the claim: a bad relpath claims nothing
        marker = self._marker_key(key)
        claim = {"key": key, "started": datetime.now(UTC).isoformat(), "host": socket.gethostname(), "pid": os.getpid()}
        try:
            self._put_once(marker, json.dumps(claim).encode(), rule="marks a publish in progress")
        except WriteOnceError:
            if self._object_exists(f"{key}/{MANIFEST_NAME}"):
                raise WriteOnceError(
                    f"{self.uri(key)}: version already exists and is write-once; refusing to overwrite"
                ) from None
            raise WriteOnceError(
                f"{self.uri(key)}: another publish of this version started ({self.uri(marker)}) and has not finished; "
                "if it died, remove it with abandon_version and publish again"
            ) from None
        if self._object_exists(f"{key}/{MANIFEST_NAME}"):  # published before us; its marker was already gone
            self._delete(marker)
            raise WriteOnceError(f"{self.uri(key)}: version already exists and is write-once; refusing to overwrite")
        try:
            for name, source in sorted(files.items()):
                if isinstance(source, bytes):
                    self._put_once(f"{key}/{name}", source)
                else:
                    with open(source, "rb") as handle:  # PutObject takes up to 5 GB in one conditional request
                        self._put_once(f"{key}/{name}", handle)
            manifest = {**manifest, "files": hashes, "content_sha256": content_sha256}
            body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
            self._put_once(f"{key}/{MANIFEST_NAME}", body)  # the commit: readers see the version from here on
        except BaseException:
            self._cleanup_failed_publish(key)
            raise
        self._delete(marker)
        return manifest

    def _cleanup_failed_publish(self, key: str) -> None:
        """Best effort after a failed publish; what it cannot remove stays findable by ``pending_versions``."""
        with contextlib.suppress(Exception):  # the original failure is what the caller must see
            self.abandon_version(key)

    def _version_objects(self, key: str) -> list[str]:
        """Relpaths of the files stored under a version, manifest excluded."""
        base = len(key.rstrip("/")) + 1
        return sorted(
            object_key[base:]
            for object_key, _ in self._list(key, delimiter=False)
            if object_key[base:] != MANIFEST_NAME
        )

    def _read_manifest(self, key: str) -> dict[str, Any]:
        try:
            return self.read_json(f"{key}/{MANIFEST_NAME}")
        except FileNotFoundError:
            raise IntegrityError(f"{self.uri(f'{key}/{MANIFEST_NAME}')}: manifest missing (not published)") from None

    def _stream_sha256(self, key: str, sink: Any = None) -> str:
        body = self._get(key)
        digest = hashlib.sha256()
        try:
            for chunk in iter(lambda: body.read(_CHUNK), b""):
                digest.update(chunk)
                if sink is not None:
                    sink.write(chunk)
        finally:
            body.close()
        return digest.hexdigest()

    def verify_version(self, key: str, expected_content_sha256: str | None = None) -> dict[str, Any]:
        """Hash every object of a version against its manifest (and the pin); returns the manifest.

        ``IntegrityError`` names the object that is missing, added or different, like ``verify_tree``.
        """
        manifest = self._read_manifest(key)
        manifest_uri = self.uri(f"{key}/{MANIFEST_NAME}")
        check_pin_first(manifest, expected_content_sha256, manifest_uri)
        actual = {name: self._stream_sha256(f"{key}/{name}") for name in self._version_objects(key)}
        check_against_manifest(
            manifest, actual, lambda name: self.uri(f"{key}/{name}"), manifest_uri, expected_content_sha256
        )
        return manifest

    def read_version(
        self, key: str, expected_content_sha256: str | None = None
    ) -> tuple[dict[str, Any], dict[str, bytes]]:
        """A version's manifest and files; the bytes returned are the bytes that were hashed and checked."""
        manifest = self._read_manifest(key)
        manifest_uri = self.uri(f"{key}/{MANIFEST_NAME}")
        check_pin_first(manifest, expected_content_sha256, manifest_uri)
        contents = {name: self.read_bytes(f"{key}/{name}") for name in self._version_objects(key)}
        actual = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
        check_against_manifest(
            manifest, actual, lambda name: self.uri(f"{key}/{name}"), manifest_uri, expected_content_sha256
        )
        return manifest, contents

    def materialize_version(
        self, key: str, expected_content_sha256: str | None = None, dest: Path | None = None
    ) -> Path:
        """Download a version into a local directory, checking every byte written; returns the directory.

        The directory holds the manifest too, so code that reads files (``verify_tree``,
        the evaluation job) works on it unchanged. On any mismatch nothing is returned.
        """
        manifest = self._read_manifest(key)
        manifest_uri = self.uri(f"{key}/{MANIFEST_NAME}")
        check_pin_first(manifest, expected_content_sha256, manifest_uri)
        created = dest is None
        dest = Path(tempfile.mkdtemp(prefix="retrain-version-")) if created else Path(dest)
        try:
            actual = {}
            for name in self._version_objects(key):
                target = dest / check_relpath(name)
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as sink:
                    actual[name] = self._stream_sha256(f"{key}/{name}", sink)
            check_against_manifest(
                manifest, actual, lambda name: self.uri(f"{key}/{name}"), manifest_uri, expected_content_sha256
            )
        except BaseException:
            if created:  # a directory of unverified bytes must not outlive the refusal
                shutil.rmtree(dest, ignore_errors=True)
            raise
        (dest / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return dest


def put_request(
    bucket: str,
    object_key: str,
    body: Any,
    content_type: str | None = None,
    write_once: bool = True,
    kms_key_arn: str | None = None,
) -> dict[str, Any]:
    """The one ``PutObject`` request the store sends: with S3 keeping its SHA-256, ``IfNoneMatch="*"`` when write-once
    (S3 answers 412 instead of overwriting), and SSE-KMS under the deployment's key when it has one."""
    # S3 keeps the object's SHA-256, so readers can skip downloading and hashing it (retrain.snapshot).
    request: dict[str, Any] = {"Bucket": bucket, "Key": object_key, "Body": body, "ChecksumAlgorithm": "SHA256"}
    if content_type:
        request["ContentType"] = content_type
    if write_once:
        request["IfNoneMatch"] = "*"
    if kms_key_arn:
        request.update({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_arn})
    return request


def put_object_request(aws: Any, key: str, body: bytes | str, content_type: str = "application/json") -> dict[str, Any]:
    """The write-once ``PutObject`` of ``key`` for a model's ``aws:`` config (``retrain.config.AwsConfig``): its three
    buckets route the key, its ``kms_key_arn`` encrypts it."""
    layout = S3Layout(
        dataset_bucket=aws.dataset_bucket, artifact_bucket=aws.artifact_bucket, golden_bucket=aws.golden_bucket
    )
    bucket, object_key = layout.locate(key)
    return put_request(bucket, object_key, body, content_type, write_once=True, kms_key_arn=aws.kms_key_arn)
