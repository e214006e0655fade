"""``bin/retrain deploy push``: upload a built bundle to an MWAA environment and point the environment at it.

1. Read the environment (``GetEnvironment``): an unknown name stops here, nothing uploaded.
2. The bucket must be the environment's source bucket and have versioning enabled: each
   upload's version id is what ``UpdateEnvironment`` pins, and what a rollback points back to.
3. Plan: ``dags/`` is synced under the environment's ``DagS3Path`` (changed files uploaded,
   files the bundle no longer has deleted; versioning keeps them); ``plugins.zip``,
   ``requirements.txt`` and ``startup.sh`` are uploaded when their bytes differ from the
   current objects; the job code goes to ``code/<digest>/`` of the artifact bucket, and each staged base model to
   ``code/base-models/<name>/<digest>/``, when absent.
4. Upload, then ``UpdateEnvironment`` with the three new object versions, then wait for
   ``AVAILABLE``, printing the status as it goes. ``--dry-run`` stops after printing the plan.

Every request is checked against botocore's service model (``retrain.aws.schema``) before it is sent.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrain.aws.schema import validate_request
from retrain_tools.deploy.bundle import MANIFEST_NAME

TOP_LEVEL = {"plugins.zip": "Plugins", "requirements.txt": "Requirements", "startup.sh": "StartupScript"}


class PushError(RuntimeError):
    """The push cannot go ahead (or the update failed); the message says why and what was changed."""


@dataclass
class Plan:
    """What a push would do: keys to upload or delete per bucket, and the environment's current pins."""

    environment: str
    bucket: str
    dag_prefix: str
    code_bucket: str
    manifest: dict[str, Any]
    current: dict[str, Any]
    uploads: list[tuple[str, Path]] = field(default_factory=list)  # (key in bucket, local file)
    unchanged: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    code_uploads: list[tuple[str, Path]] = field(default_factory=list)

    @property
    def top_level_changes(self) -> list[str]:
        return [key for key, _ in self.uploads if key in TOP_LEVEL]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()  # S3's ETag of a single-part upload; not a security use


def _client_error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def get_environment(mwaa, name: str) -> dict[str, Any]:
    """GetEnvironment's ``Environment``; PushError when there is no such environment."""
    validate_request("mwaa", "GetEnvironment", {"Name": name})
    try:
        return mwaa.get_environment(Name=name)["Environment"]
    except Exception as exc:  # botocore's ClientError; imported lazily with boto3
        if _client_error_code(exc) == "ResourceNotFoundException":
            raise PushError(
                f"MWAA environment {name!r} does not exist in this account and region; nothing was uploaded"
            ) from None
        raise


def require_versioned_source_bucket(s3, bucket: str, env: dict[str, Any]) -> None:
    """The bucket is the environment's source bucket, with versioning enabled; PushError otherwise."""
    source = env.get("SourceBucketArn", "").rsplit(":", 1)[-1]
    if source and source != bucket:
        raise PushError(
            f"--bucket {bucket}: environment {env['Name']} reads its DAGs and plugins from bucket {source!r}; nothing "
            "was uploaded"
        )
    validate_request("s3", "GetBucketVersioning", {"Bucket": bucket})
    status = s3.get_bucket_versioning(Bucket=bucket).get("Status")
    if status != "Enabled":
        raise PushError(
            f"bucket {bucket}: versioning is {status or 'not enabled'}; MWAA pins plugins, requirements and "
            "startup script by object version, so enable it (the stack's buckets have it); nothing was uploaded"
        )


def _etags(s3, bucket: str, prefix: str) -> dict[str, str]:
    """key -> ETag (quotes stripped) of every object under ``prefix``."""
    etags = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        etags |= {item["Key"]: item["ETag"].strip('"') for item in page.get("Contents", [])}
    return etags


def plan(bundle: Path, s3, mwaa, bucket: str, environment: str) -> Plan:
    """Read-only: what a push of ``bundle`` to ``environment`` would upload, keep and delete."""
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    env = get_environment(mwaa, environment)
    require_versioned_source_bucket(s3, bucket, env)
    dag_prefix = env.get("DagS3Path", "dags").strip("/") + "/"
    result = Plan(environment, bucket, dag_prefix, manifest["environment"]["RETRAIN_ARTIFACT_BUCKET"], manifest, env)
    existing = _etags(s3, bucket, dag_prefix) | {k: v for k, v in _etags(s3, bucket, "").items() if k in TOP_LEVEL}
    local = {
        dag_prefix + p.relative_to(bundle / "dags").as_posix(): p
        for p in sorted((bundle / "dags").rglob("*"))
        if p.is_file()
    }
    local |= {name: bundle / name for name in TOP_LEVEL}
    for key, path in local.items():
        (result.unchanged.append(key) if existing.get(key) == _md5(path) else result.uploads.append((key, path)))
    result.deletes = sorted(key for key in existing if key.startswith(dag_prefix) and key not in local)
    prefixes = [manifest["code_prefix"], *(m["prefix"] for m in manifest.get("base_models", {}).values())]
    result.code_uploads = [item for prefix in prefixes for item in _absent(bundle, prefix, s3, result.code_bucket)]
    return result


def _absent(bundle: Path, prefix: str, s3, bucket: str) -> list[tuple[str, Path]]:
    """(key, local file) of the bundle's files under ``prefix`` (a digest-named, immutable prefix: the job code or a
    staged base model) that the artifact bucket does not hold yet."""
    deployed = _etags(s3, bucket, prefix + "/")
    files = ((f"{prefix}/{p.relative_to(bundle / prefix).as_posix()}", p) for p in sorted((bundle / prefix).rglob("*")))
    return [(key, path) for key, path in files if path.is_file() and key not in deployed]


def describe(p: Plan) -> list[str]:
    """The plan as lines for a person."""
    m, env = p.manifest, p.current
    lines = [
        f"environment {p.environment} ({env.get('Status')}), bucket s3://{p.bucket}, DAGs under {p.dag_prefix}",
        f"bundle: git {m['git_sha']} of {m['date']}, code {m['code_digest'][:16]}, models "
        f"{', '.join(sorted(m['configs']))}",
    ]
    lines += [f"  upload  s3://{p.bucket}/{key}" for key, _ in p.uploads]
    lines += [
        f"  delete  s3://{p.bucket}/{key} (a removed DAG file or config; versioning keeps it)" for key in p.deletes
    ]
    lines += [f"  upload  s3://{p.code_bucket}/{key}" for key, _ in p.code_uploads]
    if not p.code_uploads:
        lines.append(f"  code    s3://{p.code_bucket}/{m['code_prefix']}/ already deployed")
    lines.append(f"  {len(p.unchanged)} file(s) unchanged")
    for name, field_name in TOP_LEVEL.items():
        state = (
            "new version"
            if name in p.top_level_changes
            else f"keeps version {env.get(field_name + 'S3ObjectVersion') or '-'}"
        )
        lines.append(f"  {name:<17} {state}")
    return lines


def _put(s3, bucket: str, key: str, path: Path) -> str:
    """PutObject, validated against the s3 model; the new object's VersionId."""
    request = {
        "Bucket": bucket,
        "Key": key,
        "Body": path.read_bytes(),
        "Metadata": {"retrain-sha256": hashlib.sha256(path.read_bytes()).hexdigest()},
    }
    validate_request("s3", "PutObject", request)
    return s3.put_object(**request).get("VersionId", "")


def update_request(p: Plan, versions: dict[str, str]) -> dict[str, Any]:
    """UpdateEnvironment pinning plugins.zip, requirements.txt and startup.sh to ``versions`` (name -> VersionId)."""
    request: dict[str, Any] = {"Name": p.environment, "DagS3Path": p.dag_prefix.rstrip("/")}
    for name, field_name in TOP_LEVEL.items():
        request[f"{field_name}S3Path"] = name
        request[f"{field_name}S3ObjectVersion"] = versions[name]
    validate_request("mwaa", "UpdateEnvironment", request)
    return request


def current_versions(s3, p: Plan) -> dict[str, str]:
    """VersionId of the plugins.zip, requirements.txt and startup.sh the push leaves as they are."""
    return {
        name: s3.head_object(Bucket=p.bucket, Key=name)["VersionId"]
        for name in TOP_LEVEL
        if name not in p.top_level_changes
    }


def wait_available(mwaa, name: str, poll_s: float, timeout_s: float, show: Callable[[str], None]) -> dict[str, Any]:
    """Poll GetEnvironment until AVAILABLE, showing status and elapsed time; PushError on failure or timeout."""
    started = time.monotonic()
    while True:
        env = mwaa.get_environment(Name=name)["Environment"]
        elapsed = time.monotonic() - started
        show(f"  {name}: {env['Status']:<14} {elapsed:6.0f} s")
        if env["Status"] == "AVAILABLE":
            return env
        if env["Status"] in ("UPDATE_FAILED", "UNAVAILABLE", "ROLLING_BACK"):
            error = (env.get("LastUpdate") or {}).get("Error") or {}
            raise PushError(
                f"environment {name} update ended {env['Status']}: {error.get('ErrorMessage', 'no message')}; "
                "MWAA keeps (or returns to) the previous versions"
            )
        if elapsed > timeout_s:
            raise PushError(
                f"environment {name} still {env['Status']} after {timeout_s:.0f} s; watch it in the MWAA console"
            )
        time.sleep(poll_s)


def push(
    p: Plan,
    s3,
    mwaa,
    *,
    poll_s: float = 30.0,
    timeout_s: float = 3600.0,
    log: Callable[[str], None] = print,
    show: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Upload what the plan says, point the environment at the new versions and wait; returns what changed."""
    show = show or log
    for key, path in p.code_uploads:
        _put(s3, p.code_bucket, key, path)
    versions = {name: version for name, version in current_versions(s3, p).items() if name not in p.top_level_changes}
    for key, path in p.uploads:
        version = _put(s3, p.bucket, key, path)
        if key in TOP_LEVEL:
            versions[key] = version
    for key in p.deletes:
        validate_request("s3", "DeleteObject", {"Bucket": p.bucket, "Key": key})
        s3.delete_object(Bucket=p.bucket, Key=key)
    before = {name: p.current.get(f"{field_name}S3ObjectVersion") for name, field_name in TOP_LEVEL.items()}
    changed = {name: (before[name], versions[name]) for name in TOP_LEVEL if before[name] != versions[name]}
    log(f"uploaded {len(p.uploads)} file(s) and {len(p.code_uploads)} code object(s), deleted {len(p.deletes)}")
    if changed:
        mwaa.update_environment(**update_request(p, versions))
        log(
            f"UpdateEnvironment {p.environment}: "
            + "; ".join(f"{n} {old or '-'} -> {new}" for n, (old, new) in changed.items())
        )
        wait_available(mwaa, p.environment, poll_s, timeout_s, show)
    else:
        log(f"{p.environment} already runs these plugins, requirements and startup script: no UpdateEnvironment")
    return {
        "changed_versions": changed,
        "uploaded": [k for k, _ in p.uploads],
        "deleted": p.deletes,
        "code_uploaded": [k for k, _ in p.code_uploads],
        "versions": versions,
    }


def tty_progress(line: str) -> None:
    """One status line rewritten in place on a terminal, one line per poll otherwise."""
    if sys.stdout.isatty():
        print("\r" + line, end="", flush=True)
    else:
        print(line, flush=True)


def clients(region: str | None = None):
    """boto3 S3 and MWAA clients. boto3 honours AWS_ENDPOINT_URL(_S3) itself; for MWAA an endpoint from
    AWS_ENDPOINT_URL_MWAA or AWS_ENDPOINT_URL (a simulator) is used without MWAA's ``api.`` host prefix."""
    import os

    import boto3
    from botocore.config import Config

    mwaa_endpoint = os.environ.get("AWS_ENDPOINT_URL_MWAA") or os.environ.get("AWS_ENDPOINT_URL")
    return (
        boto3.client("s3", region_name=region),
        boto3.client(
            "mwaa",
            region_name=region,
            endpoint_url=mwaa_endpoint,
            config=Config(inject_host_prefix=mwaa_endpoint is None),
        ),
    )
