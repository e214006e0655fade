"""Which S3 bucket holds a store key: the one routing rule of the aws backend.

Keys are the same on S3 and on disk (``retrain.store``); on S3 the key's first segment
picks one of three buckets, and the key is stored unchanged at that bucket's root:

- ``raw/``, ``datasets/`` → the dataset bucket (``aws.dataset_bucket``);
- ``golden/`` → the Object-Locked golden bucket (``aws.golden_bucket``);
- ``runs/``, ``ledger/``, ``code/``, ``mlartifacts/``, ``tmp/`` → the artifact bucket
  (``aws.artifact_bucket``).

There is no key prefix inside a bucket: the IAM policies of infra/cloudformation/retrain.yaml
grant each role ``raw/*``, ``runs/*``… at the bucket root, so a prefix would lock the jobs
out. One deployment owns its three buckets.

Both ``retrain.aws.locations.s3_uri`` (the job request builders) and ``retrain.store.s3.S3Store``
(the Airflow side and the jobs' own reads) address objects through ``S3Layout``, so a key
has one URI everywhere. No AWS SDK is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BucketRole = Literal["dataset", "artifact", "golden"]

ROLE_OF_PREFIX: dict[str, BucketRole] = {
    "raw": "dataset",
    "datasets": "dataset",
    "golden": "golden",
    "runs": "artifact",
    "ledger": "artifact",
    "code": "artifact",  # the deployed code bundle (retrain.aws.locations.CodeBundle)
    "mlartifacts": "artifact",  # the MLflow tracking server's artifact store
    "tmp": "artifact",  # Glue's --TempDir, expired by a lifecycle rule
}
"""First key segment → the role of the bucket that holds it."""

RULE = "the first key segment picks the bucket: " + ", ".join(
    f"{prefix}/ → {role}" for prefix, role in ROLE_OF_PREFIX.items()
)


def check_key(key: str) -> str:
    """A store key without its trailing slash (a prefix); ValueError for an empty, absolute or climbing key."""
    key = key.rstrip("/")
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(
            f"invalid store key {key!r}: keys are relative POSIX paths without '.', '..' or empty segments"
        )
    return key


def bucket_role(key: str) -> BucketRole:
    """The role of the bucket that holds ``key``; ValueError names the key and the rule."""
    first = check_key(key).split("/", 1)[0]
    if first not in ROLE_OF_PREFIX:
        raise ValueError(f"store key {key!r}: {first!r} is not a known top-level prefix; rule: {RULE}")
    return ROLE_OF_PREFIX[first]


@dataclass(frozen=True)
class S3Layout:
    """The three buckets of one deployment, and where each key lives among them."""

    dataset_bucket: str
    """Bucket of raw/ and datasets/."""
    artifact_bucket: str
    """Bucket of runs/, ledger/, code/, mlartifacts/ and tmp/."""
    golden_bucket: str
    """Object-Locked bucket of golden/."""

    def __post_init__(self) -> None:
        for role in ("dataset", "artifact", "golden"):
            if not getattr(self, f"{role}_bucket"):
                raise ValueError(f"S3Layout needs a name for the {role} bucket ({role}_bucket is empty)")

    def bucket_of(self, key: str) -> str:
        """The bucket name that holds ``key``."""
        return getattr(self, f"{bucket_role(key)}_bucket")

    def locate(self, key: str) -> tuple[str, str]:
        """``(bucket, object key)`` of a store key; the object key is the store key itself."""
        key = check_key(key)
        return self.bucket_of(key), key

    def uri(self, key: str) -> str:
        """``s3://<bucket>/<key>`` of a store key."""
        bucket, object_key = self.locate(key)
        return f"s3://{bucket}/{object_key}"
