"""One place chooses the store: the backend's environment, or a job's --store-root."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from retrain.s3store import S3Store
from retrain.store import LocalStore
from retrain.stores import StoreConfigError, get_store, store_argument, store_for

BOTO_IMPORT = re.compile(r"^\s*(?:import|from)\s+(?:boto3|botocore)\b", re.MULTILINE)
AWS_VARIABLES = ("RETRAIN_S3_BUCKET", "RETRAIN_S3_PREFIX", "RETRAIN_GOLDEN_BUCKET")


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
    with pytest.raises(StoreConfigError, match="RETRAIN_S3_BUCKET is not set; RETRAIN_BACKEND=aws needs it"):
        get_store()
    clean_env.setenv("RETRAIN_S3_BUCKET", "retrain-data")
    with pytest.raises(StoreConfigError, match="RETRAIN_GOLDEN_BUCKET is not set"):
        get_store()
    clean_env.setenv("RETRAIN_GOLDEN_BUCKET", "retrain-golden")
    clean_env.setenv("RETRAIN_S3_PREFIX", "/prod/")
    store = get_store()
    assert isinstance(store, S3Store)
    assert store.uri("golden/intent/g1") == "s3://retrain-golden/prod/golden/intent/g1"
    assert store.uri("ledger/intent/00000001.json") == "s3://retrain-data/prod/ledger/intent/00000001.json"


def test_an_unknown_backend_is_refused(clean_env):
    clean_env.setenv("RETRAIN_BACKEND", "gcp")
    with pytest.raises(StoreConfigError, match="RETRAIN_BACKEND='gcp': must be one of"):
        get_store()


def test_store_root_arguments_round_trip(clean_env, tmp_path):
    local = store_for(tmp_path)
    assert isinstance(local, LocalStore) and local.root == tmp_path and store_argument(local) == str(tmp_path)
    clean_env.setenv("RETRAIN_GOLDEN_BUCKET", "retrain-golden")
    remote = store_for("s3://retrain-data/prod/v2")
    assert isinstance(remote, S3Store) and (remote.bucket, remote.prefix, remote.golden_bucket) == ("retrain-data", "prod/v2", "retrain-golden")
    assert store_argument(remote) == "s3://retrain-data/prod/v2"
    assert store_argument(store_for("s3://retrain-data")) == "s3://retrain-data"
    with pytest.raises(StoreConfigError, match="only local paths and s3:// URIs"):
        store_for("gs://bucket/x")
    with pytest.raises(ValueError, match="needs a bucket name"):
        store_for("s3:///prefix")


def test_choosing_a_store_imports_no_boto3():
    """DAG parsing and the local backend must not pay for boto3; S3Store imports it on first use."""
    code = (
        "import os, sys; os.environ.update(RETRAIN_BACKEND='aws', RETRAIN_S3_BUCKET='b', RETRAIN_GOLDEN_BUCKET='g');"
        "from retrain.stores import get_store; store = get_store(); store.uri('raw/x');"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, sorted(m for m in sys.modules if 'boto' in m)"
    )
    plugins = Path(__file__).resolve().parents[2] / "plugins"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(plugins)})
    assert result.returncode == 0, result.stderr


def test_only_the_s3_store_imports_boto3():
    """Storage goes through the store modules. The one other AWS SDK import is botocore's service
    models in the request-schema validator, which reads API shapes and never calls AWS."""
    root = Path(__file__).resolve().parents[2]
    allowed = {"plugins/retrain/s3store.py": "boto", "plugins/retrain/aws/schema.py": "botocore"}
    offenders = []
    for folder in ("plugins", "include", "dags", "scripts"):
        for path in (root / folder).rglob("*.py"):
            rel = str(path.relative_to(root))
            for match in BOTO_IMPORT.finditer(path.read_text()):
                if rel not in allowed or not match.group(0).split()[-1].startswith(allowed[rel]):
                    offenders.append(f"{rel}: {match.group(0).strip()}")
    assert offenders == []
