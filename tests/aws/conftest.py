"""The aws tier runs the S3 store against moto, an AWS simulator, never against AWS.

One moto server (server mode, a real HTTP endpoint on 127.0.0.1 and a free port) serves
the whole session; every test gets fresh, uniquely named buckets on it. Credentials are
fake and every client names the simulator's endpoint, so no request can reach AWS.
"""

from __future__ import annotations

import uuid

import pytest

pytest.importorskip("moto.server", reason="moto[server] (requirements-dev.txt) runs the aws tier's simulator")

from moto.server import ThreadedMotoServer  # noqa: E402

from retrain.runner import free_port  # noqa: E402
from retrain.store import S3Store  # noqa: E402

REGION = "us-east-1"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


@pytest.fixture(scope="session")
def moto_simulator_endpoint():
    """moto, an AWS simulator, in server mode on 127.0.0.1: its endpoint URL, for the whole session. Its SageMaker
    endpoints gain what moto lacks and AWS documents (UpdateEndpoint, shadow variants, name reuse refused):
    ``tests/moto_endpoints.py``."""
    from moto_endpoints import simulated_endpoint_behaviour  # tests/ is on pytest's pythonpath

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        with simulated_endpoint_behaviour():
            yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def simulator_env(moto_simulator_endpoint, monkeypatch):
    """Environment that points boto3's defaults at the moto simulator with fake credentials."""
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_simulator_endpoint)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_simulator_endpoint


@pytest.fixture
def simulator_s3(simulator_env):
    """An S3 client of the moto simulator (never AWS: the endpoint is the simulator's)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=simulator_env,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _bucket_name(kind: str) -> str:
    return f"retrain-test-{kind}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def simulator_buckets(simulator_s3) -> dict[str, str]:
    """Fresh buckets on the moto simulator: ``dataset`` and ``artifact``, ``golden`` (Object Lock,
    COMPLIANCE default retention, as the infrastructure sets it) and ``plain`` (no lock, no versioning)."""
    names = {kind: _bucket_name(kind) for kind in ("dataset", "artifact", "golden", "plain")}
    for kind in ("dataset", "artifact", "plain"):
        simulator_s3.create_bucket(Bucket=names[kind])
    simulator_s3.create_bucket(Bucket=names["golden"], ObjectLockEnabledForBucket=True)
    simulator_s3.put_object_lock_configuration(
        Bucket=names["golden"],
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
        },
    )
    return names


@pytest.fixture
def s3_store(simulator_s3, simulator_buckets) -> S3Store:
    """An S3Store on the moto simulator: the dataset, artifact and locked golden buckets of one deployment."""
    return S3Store(
        simulator_buckets["dataset"], simulator_buckets["artifact"], simulator_buckets["golden"], client=simulator_s3
    )


@pytest.fixture(scope="session")
def simulated_tracking_server(moto_simulator_endpoint, tmp_path_factory):
    """A local ``mlflow server`` standing in for the SageMaker managed tracking server, for the whole
    session: its port. Jobs reach it through the sagemaker-mlflow plugin's ``SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT``."""
    import os

    from mlflow_server import local_mlflow_server  # tests/ is on pytest's pythonpath

    def environment(root):
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "SAGEMAKER_"))}
        return {**clean, **FAKE_CREDENTIALS, "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": moto_simulator_endpoint}

    with local_mlflow_server(tmp_path_factory.mktemp("tracking-server"), environment) as port:
        yield port


@pytest.fixture(scope="session")
def simulated_jobs(moto_simulator_endpoint, simulated_tracking_server, tmp_path_factory):
    """moto's SageMaker and Glue made to run the jobs they are asked for through the local job environment
    (``tests/moto_job_bridge.py``), for the whole session; tests may add to its ``extra_env``. Jobs track to
    ``simulated_tracking_server`` and write MLflow artifacts to the simulator's S3."""
    import boto3

    from moto_job_bridge import MotoLocalJobBridge  # tests/ is on pytest's pythonpath

    s3 = boto3.client(
        "s3",
        endpoint_url=moto_simulator_endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    bridge = MotoLocalJobBridge(
        s3,
        tmp_path_factory.mktemp("containers"),
        {
            **FAKE_CREDENTIALS,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": moto_simulator_endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
            "SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT": f"http://127.0.0.1:{simulated_tracking_server}",
            "MLFLOW_S3_ENDPOINT_URL": moto_simulator_endpoint,
        },
    )
    with bridge.installed():
        yield bridge
