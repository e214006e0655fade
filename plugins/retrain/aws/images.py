"""The project's job image, ``retrain-jobs``: the image every SageMaker training and processing job runs.

One image serves both contracts. Training starts it as ``train`` (SageMaker's training toolkit, which unpacks
``sagemaker_submit_directory`` and runs ``sagemaker_program``); processing starts it with our own entrypoint,
``python3 <script>``. Both need exactly the job environment's packages, so a second image would only be a second
copy of the same lock. ``images/Dockerfile`` installs that lock (the same files ``.venv-jobs`` is built from) and
nothing else.

A config names the image by repository and tag, and the tag is a digest of the lock files and the Dockerfile
(``lock_tag``): a config whose tag was built from another lock, or that names any other image (a stock Deep
Learning Container has none of our packages), is refused when the config loads, never at the first job.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

JOB_IMAGE_REPOSITORY = "retrain-jobs"
# Everything that decides what the image holds. .venv-jobs is built from the first three (Makefile).
LOCK_FILES = ("requirements-jobs.txt", "requirements-jobs-nodeps.txt", "constraints/jobs.txt", "images/Dockerfile")
TAG_ENV = "RETRAIN_JOB_IMAGE_TAG"  # exported by startup.sh on MWAA, which has the plugins but not the lock files
CHECKOUT_ROOT = Path(__file__).resolve().parents[3]
_ECR_URI = re.compile(r"(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?/(?P<rest>.+)")


class LockMissing(ValueError):
    """A lock file is absent, so the job image's tag cannot be computed."""


def lock_tag(root: Path) -> str:
    """``lock-<20 hex>``: sha256 over each lock file's name and bytes, in LOCK_FILES order."""
    digest = hashlib.sha256()
    for name in LOCK_FILES:
        path = root / name
        if not path.is_file():
            raise LockMissing(f"{path}: lock file of the job image is missing, so its tag cannot be computed")
        data = path.read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return f"lock-{digest.hexdigest()[:20]}"


def expected_tag() -> str:
    """The tag a config must name: ``RETRAIN_JOB_IMAGE_TAG`` where set (MWAA), else this checkout's lock."""
    exported = os.environ.get(TAG_ENV, "").strip()
    if exported:
        return exported
    try:
        return lock_tag(CHECKOUT_ROOT)
    except LockMissing as exc:
        raise LockMissing(
            f"{exc}; outside a checkout, set {TAG_ENV} (startup.sh of `bin/retrain deploy build`)"
        ) from None


def image_uri(account: str, region: str, tag: str) -> str:
    """The ECR URI of the job image with ``tag`` in ``account`` and ``region``."""
    return f"{account}.dkr.ecr.{region}.amazonaws.com/{JOB_IMAGE_REPOSITORY}:{tag}"


def registry_region(uri: str) -> str:
    """The region of an ECR image URI's registry."""
    match = _ECR_URI.fullmatch(uri)
    if not match:
        raise ValueError(f"{uri!r} is not an ECR image URI")
    return match["region"]


def check_job_image(uri: str) -> str:
    """``uri`` itself when it names the job image built from this lock; ValueError saying what is wrong otherwise."""
    match = _ECR_URI.fullmatch(uri)
    if not match:
        raise ValueError(f"{uri!r} is not an ECR image URI")
    repository, _, tag = match["rest"].partition(":")
    if repository != JOB_IMAGE_REPOSITORY or "@" in match["rest"]:
        raise ValueError(
            f"{uri!r} is not the project's job image: the jobs run {JOB_IMAGE_REPOSITORY}:<lock tag> "
            "(images/Dockerfile, built and pushed by `bin/retrain deploy image`), because no other image carries the "
            "job lock's packages"
        )
    expected = expected_tag()
    if tag != expected:
        raise ValueError(
            f"{uri!r}: tag {tag!r} was not built from this job lock ({', '.join(LOCK_FILES)}), whose image tag is "
            f"{expected!r}; run `bin/retrain deploy image` and write that tag here"
        )
    return uri
