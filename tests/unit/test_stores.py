"""One place chooses the store: the backend's environment, or a job's --store-root."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from retrain.store import LocalStore, S3Store, StoreConfigError, get_store, store_argument, store_for

BOTO_IMPORT = re.compile(r"^\s*(?:import|from)\s+(?:boto3|botocore)\b", re.MULTILINE)
AWS_VARIABLES = (
    "RETRAIN_DATASET_BUCKET",
    "RETRAIN_ARTIFACT_BUCKET",
    "RETRAIN_GOLDEN_BUCKET",
    "RETRAIN_S3_BUCKET",
    "RETRAIN_S3_PREFIX",
)


@pytest.fixture
def clean_env(monkeypatch):
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_local_backend_is_a_local_store_at_retrain_home(clean_env, tmp_path):
    clean_env.setenv("RETRAIN_BACKEND", "local")
    clean_env.setenv("RETRAIN_HOME", str(tmp_path / "home"))
    store = get_store()
    assert isinstance(store, LocalStore) and store.root == tmp_path / "home"


def test_aws_backend_names_the_missing_variable(clean_env):
    clean_env.setenv("RETRAIN_BACKEND", "aws")
    with pytest.raises(StoreConfigError, match="RETRAIN_DATASET_BUCKET is not set; RETRAIN_BACKEND=aws needs it"):
        get_store()
    clean_env.setenv("RETRAIN_DATASET_BUCKET", "retrain-datasets")
    with pytest.raises(StoreConfigError, match="RETRAIN_ARTIFACT_BUCKET is not set; RETRAIN_BACKEND=aws needs it"):
        get_store()
    clean_env.setenv("RETRAIN_ARTIFACT_BUCKET", "retrain-artifacts")
    with pytest.raises(StoreConfigError, match="RETRAIN_GOLDEN_BUCKET is not set"):
        get_store()
    clean_env.setenv("RETRAIN_GOLDEN_BUCKET", "retrain-golden")
    store = get_store()
    assert isinstance(store, S3Store)
    assert store.uri("raw/intent/dt=2026-01-05") == "s3://retrain-datasets/raw/intent/dt=2026-01-05"
    assert store.uri("golden/intent/g1") == "s3://retrain-golden/golden/intent/g1"
    assert store.uri("ledger/intent/00000001.json") == "s3://retrain-artifacts/ledger/intent/00000001.json"


@pytest.mark.parametrize(
    ("name", "replacement"),
    [("RETRAIN_S3_BUCKET", "RETRAIN_DATASET_BUCKET and RETRAIN_ARTIFACT_BUCKET"), ("RETRAIN_S3_PREFIX", "nothing")],
)
def test_a_variable_of_the_one_bucket_layout_is_refused_not_ignored(clean_env, name, replacement):
    # A stale startup.sh would otherwise write keys somewhere other than where its operator looks.
    clean_env.setenv("RETRAIN_BACKEND", "aws")
    for variable, value in (
        ("RETRAIN_DATASET_BUCKET", "d"),
        ("RETRAIN_ARTIFACT_BUCKET", "a"),
        ("RETRAIN_GOLDEN_BUCKET", "g"),
        (name, "prod"),
    ):
        clean_env.setenv(variable, value)
    with pytest.raises(
        StoreConfigError,
        match=rf"{name} is set, but RETRAIN_BACKEND=aws no longer reads it \(replaced by {replacement}",
    ):
        get_store()


def test_an_unknown_backend_is_refused(clean_env):
    clean_env.setenv("RETRAIN_BACKEND", "gcp")
    with pytest.raises(StoreConfigError, match="RETRAIN_BACKEND='gcp': must be one of"):
        get_store()


def test_store_root_arguments_round_trip(clean_env, tmp_path):
    local = store_for(tmp_path)
    assert isinstance(local, LocalStore) and local.root == tmp_path and store_argument(local) == str(tmp_path)
    with pytest.raises(
        StoreConfigError, match=r"RETRAIN_ARTIFACT_BUCKET is not set; --store-root s3://retrain-datasets needs it"
    ):
        store_for("s3://retrain-datasets")
    clean_env.setenv("RETRAIN_ARTIFACT_BUCKET", "retrain-artifacts")
    clean_env.setenv("RETRAIN_GOLDEN_BUCKET", "retrain-golden")
    remote = store_for("s3://retrain-datasets")
    assert isinstance(remote, S3Store)
    assert (remote.layout.dataset_bucket, remote.layout.artifact_bucket, remote.layout.golden_bucket) == (
        "retrain-datasets",
        "retrain-artifacts",
        "retrain-golden",
    )
    assert store_argument(remote) == "s3://retrain-datasets"
    explicit = store_for("s3://d", artifact_bucket="a", golden_bucket="g")
    assert (explicit.layout.artifact_bucket, explicit.layout.golden_bucket) == ("a", "g")
    with pytest.raises(
        StoreConfigError,
        match=r"named by its dataset bucket alone \(s3://retrain-datasets\); rule: keys sit at each bucket's root",
    ):
        store_for("s3://retrain-datasets/prod/v2")
    with pytest.raises(StoreConfigError, match="only local paths and s3:// URIs"):
        store_for("gs://bucket/x")
    with pytest.raises(ValueError, match="needs a bucket name"):
        store_for("s3:///prefix")


def test_choosing_a_store_imports_no_boto3():
    """DAG parsing and the local backend must not pay for boto3; S3Store imports it on first use."""
    code = (
        "import os, sys; os.environ.update(RETRAIN_BACKEND='aws', RETRAIN_DATASET_BUCKET='d', "
        "RETRAIN_ARTIFACT_BUCKET='a', RETRAIN_GOLDEN_BUCKET='g');"
        "from retrain.store import get_store; store = get_store(); store.uri('raw/x');"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, sorted(m for m in sys.modules if 'boto' "
        "in m)"
    )
    plugins = Path(__file__).resolve().parents[2] / "plugins"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(plugins)}
    )
    assert result.returncode == 0, result.stderr


def test_only_the_s3_store_imports_boto3():
    """Storage goes through the store modules. The other AWS SDK imports are botocore's service
    models in the request-schema validator, which reads API shapes and never calls AWS, and the
    deploy tool (`bin/retrain deploy push` and `deploy stack`), which uploads the bundle, calls MWAA and
    CloudFormation from the CLI, never from a DAG, a task or a job."""
    root = Path(__file__).resolve().parents[2]
    allowed = {
        "plugins/retrain/store/s3.py": "boto",
        "plugins/retrain/aws/schema.py": "botocore",
        "tools/retrain_tools/deploy/push.py": "boto",
        "tools/retrain_tools/deploy/stack.py": "boto",
    }
    offenders = []
    for folder in ("plugins", "tools", "include", "dags", "scripts"):
        for path in (root / folder).rglob("*.py"):
            rel = str(path.relative_to(root))
            for match in BOTO_IMPORT.finditer(path.read_text()):
                if rel not in allowed or not match.group(0).split()[-1].startswith(allowed[rel]):
                    offenders.append(f"{rel}: {match.group(0).strip()}")
    assert offenders == []
