"""One S3 layout: the job request builders and the S3 store name the same object for every key."""

from __future__ import annotations

import pytest

from retrain.aws.locations import s3_uri
from retrain.config import load_model
from retrain.store import S3Store
from retrain.store.layout import ROLE_OF_PREFIX, bucket_role
from retrain.store.s3 import put_object_request

# One key of every family the project stores, and the AwsConfig field of the bucket it belongs in.
KEY_FAMILIES = {
    "raw/intent/dt=2026-01-05/part-0.csv": "dataset_bucket",
    "datasets/intent/ds-1a2b/train.jsonl": "dataset_bucket",
    "golden/intent/g1/golden.jsonl": "golden_bucket",
    "runs/intent/manual__2026-01-05/1/gate_on_metrics/gate.json": "artifact_bucket",
    "ledger/intent/00000001.json": "artifact_bucket",
    "code/0123abc/retrain.zip": "artifact_bucket",
    "mlartifacts/1/abc/artifacts/model": "artifact_bucket",
    "tmp/glue/x": "artifact_bucket",
}


@pytest.fixture(scope="module")
def aws():
    return load_model("intent").aws


@pytest.fixture(scope="module")
def store(aws):
    return S3Store(aws.dataset_bucket, aws.artifact_bucket, aws.golden_bucket)  # no client: addressing makes no call


def test_every_prefix_of_the_rule_has_a_key_family_here():
    assert {key.split("/")[0] for key in KEY_FAMILIES} == set(ROLE_OF_PREFIX)


@pytest.mark.parametrize(("key", "field"), KEY_FAMILIES.items())
def test_store_and_builders_name_the_same_object(aws, store, key, field):
    expected = f"s3://{getattr(aws, field)}/{key}"  # the bucket root: no prefix anywhere
    assert s3_uri(aws, key) == expected
    assert store.uri(key) == expected
    request = put_object_request(aws, key, b"{}")
    assert f"s3://{request['Bucket']}/{request['Key']}" == expected


def test_the_three_buckets_are_told_apart(aws):
    # Equal bucket names would let a wrong route pass the test above unnoticed.
    assert len({aws.dataset_bucket, aws.artifact_bucket, aws.golden_bucket}) == 3


def test_a_prefix_is_routed_like_its_objects(aws, store):
    assert store.uri("raw/intent/") == s3_uri(aws, "raw/intent/") == f"s3://{aws.dataset_bucket}/raw/intent"


@pytest.mark.parametrize("key", ["scratch/x", "rawdata/intent", "Raw/intent"])
def test_both_sides_refuse_a_key_outside_the_rule_naming_key_and_rule(aws, store, key):
    message = (
        rf"store key '{key}': '{key.split('/')[0]}' is not a known top-level prefix; "
        r"rule: the first key segment picks the bucket"
    )
    with pytest.raises(ValueError, match=message):
        s3_uri(aws, key)
    with pytest.raises(ValueError, match=message):
        store.uri(key)


@pytest.mark.parametrize("key", ["", "/raw/x", "raw/../golden/x", "raw//x", "./raw"])
def test_malformed_keys_are_refused(key):
    with pytest.raises(ValueError, match="invalid store key"):
        bucket_role(key)


def test_a_store_needs_all_three_buckets():
    with pytest.raises(ValueError, match=r"needs a name for the artifact bucket \(artifact_bucket is empty\)"):
        S3Store("d", "", "g")
