"""Training logs to a SageMaker managed MLflow tracking server named by its ARN.

What is real: the training job (``include/retrain_jobs/train.py`` in the job environment,
started through the runner's ``command_line``/``job_environment``), MLflow 3 with the
``sagemaker-mlflow`` plugin resolving ``MLFLOW_TRACKING_URI=arn:aws:sagemaker:...``, the
plugin's SigV4 signing, and a real ``mlflow server`` that stores what it receives.

What stands in: that server runs on 127.0.0.1 instead of SageMaker's, reached through
``SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT`` (the plugin's own switch for this); a small recording
proxy in front of it keeps each request so its signature can be recomputed here; the
credentials are fake (``testing``); and the experiment's ``s3://`` artifact root, which
the job writes to directly as it does on AWS, is a bucket on moto, an AWS simulator.
SageMaker itself never checks these signatures here; the test does, with botocore.

Without credentials the job fails before any request leaves it; without the plugin MLflow
refuses the ARN instead of logging anywhere else.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from jobscripts import JOBSIDE  # tests/ is on pytest's pythonpath
from mlflow_server import local_mlflow_server  # tests/ is on pytest's pythonpath
from retrain.paths import INCLUDE_DIR, PROJECT_ROOT, job_python
from retrain.runner import LocalJob, command_line, job_environment
from retrain.tracking import ARTIFACT_ROOT_ENV
from tinydata import tiny_channels

pytestmark = pytest.mark.aws

REGION = "us-east-1"
ARN = f"arn:aws:sagemaker:{REGION}:123456789012:mlflow-tracking-server/retrain"
FAKE_KEY = "testing"
SIGNING_SERVICE = "sagemaker-mlflow"  # sagemaker_mlflow.auth_provider signs tracking servers for this service
EXPERIMENT = "retrain_intent"
ROUTING_PREFIXES = ("AWS_", "MLFLOW_", "SAGEMAKER_")

AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})$"
)


def _without_routing(env: dict[str, str]) -> dict[str, str]:
    """``env`` without any AWS, MLflow or SageMaker setting (a developer's profile or keys must not leak in)."""
    return {k: v for k, v in env.items() if not k.startswith(ROUTING_PREFIXES)}


def _clean_env(tmp: Path) -> dict[str, str]:
    """This process's environment without routing settings, and no AWS config or instance credentials to fall
    back on: only what a test sets can sign or route a request."""
    env = _without_routing(dict(os.environ))
    env.update(
        {
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-credentials"),
            "AWS_CONFIG_FILE": str(tmp / "no-config"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    return env


class _RecordingProxy(BaseHTTPRequestHandler):
    """Forwards each request to the MLflow server unchanged and keeps what arrived: method, path, headers, body."""

    def _forward(self) -> None:
        assert "chunked" not in self.headers.get("Transfer-Encoding", ""), "the proxy reads Content-Length bodies only"
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.records.append(
            {
                "method": self.command,
                "path": self.path,
                "body": body,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
        )
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=60)
        upstream.request(
            self.command,
            self.path,
            body=body or None,
            headers={
                k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection", "content-length")
            },
        )
        response = upstream.getresponse()
        payload = response.read()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("connection", "content-length", "transfer-encoding", "date", "server"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        upstream.close()

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward

    def log_message(self, *args) -> None:  # the records are the log
        pass


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` from the job environment on 127.0.0.1 (SQLite backend): its port."""
    with local_mlflow_server(tmp_path_factory.mktemp("mlflow-server"), _clean_env) as port:
        yield port


@pytest.fixture(scope="module")
def proxy(mlflow_server):
    """The recording proxy in front of the server: ``SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT`` points here."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingProxy)
    server.upstream_port, server.records = mlflow_server, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def artifact_bucket(moto_simulator_endpoint) -> str:
    """A fresh bucket on the moto simulator: the experiments' artifact root, as the aws backend's s3:// one."""
    import boto3

    name = f"retrain-test-mlflow-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=moto_simulator_endpoint,
        region_name=REGION,
        aws_access_key_id=FAKE_KEY,
        aws_secret_access_key=FAKE_KEY,
    ).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def channels(tmp_path_factory) -> dict[str, Path]:
    """A tiny train/validation split of Banking77: 5 intents, 12 + 4 examples each."""
    return tiny_channels(tmp_path_factory.mktemp("dataset"), 12, 4)


def _training_spec(channels: dict[str, Path], out: Path) -> LocalJob:
    arguments = {
        "labels-file": str(channels["labels"]),
        "dataset-version": "ds-tiny",
        "epochs": "2",
        "batch-size": "16",
        "head-learning-rate": "0.05",
        "threads": "2",
        "seed": "7",
        "experiment-name": EXPERIMENT,
        "run-name": f"{EXPERIMENT}/manual__1",
    }
    return LocalJob(
        name="train_model",
        kind="training",
        script=INCLUDE_DIR / "retrain_jobs" / "train.py",
        arguments=arguments,
        channels={"train": channels["train"], "validation": channels["validation"]},
        model_dir=out / "model",
        output_dir=out / "output",
        checkpoint_dir=out / "checkpoints",
        result_file=out / "model" / "training_summary.json",
    )


def _run_training(spec: LocalJob, env: dict[str, str]) -> subprocess.CompletedProcess:
    for directory in (spec.model_dir, spec.checkpoint_dir):
        directory.mkdir(parents=True, exist_ok=True)
    job_env = job_environment(spec)
    # The job's own PYTHONPATH (include/ and plugins/) wins over the test process's.
    env = {**_without_routing(job_env), **env, "PYTHONPATH": job_env["PYTHONPATH"]}
    return subprocess.run(command_line(spec), env=env, capture_output=True, text=True, timeout=600)


def _managed_env(tmp: Path, proxy, bucket: str, simulator: str) -> dict[str, str]:
    """A job's MLflow settings on AWS (the server's ARN, an s3:// artifact root), routed to the local stand-ins."""
    return {
        **_clean_env(tmp),
        "MLFLOW_TRACKING_URI": ARN,
        "SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT": f"http://127.0.0.1:{proxy.server_port}",
        ARTIFACT_ROOT_ENV: f"s3://{bucket}/mlartifacts",
        "MLFLOW_S3_ENDPOINT_URL": simulator,
        "AWS_ENDPOINT_URL": simulator,  # any other boto3 call also lands on the simulator, never on AWS
        "AWS_ACCESS_KEY_ID": FAKE_KEY,
        "AWS_SECRET_ACCESS_KEY": FAKE_KEY,
        "AWS_SESSION_TOKEN": FAKE_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "RETRAIN_LINEAGE": json.dumps({"git_sha": "abc123", "dataset_version": "ds-tiny", "config_digest": "cfg-1"}),
    }


@pytest.fixture(scope="module")
def managed_run(channels, proxy, mlflow_server, artifact_bucket, moto_simulator_endpoint, tmp_path_factory):
    """The real training job logging to the ARN; its summary, what the server recorded, and the proxy's records of
    it."""
    out = tmp_path_factory.mktemp("managed-run")
    before = len(proxy.records)
    proc = _run_training(
        _training_spec(channels, out), _managed_env(out, proxy, artifact_bucket, moto_simulator_endpoint)
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "model" / "training_summary.json").read_text())
    # what the server holds for the run, read straight from it (not through the proxy), without the plugin's signing
    read = subprocess.run(
        [
            str(job_python()),
            str(JOBSIDE / "read_mlflow_run.py"),
            f"http://127.0.0.1:{mlflow_server}",
            summary["mlflow_run_id"],
        ],
        env=_clean_env(out),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert read.returncode == 0, read.stderr[-3000:]
    return {
        "summary": summary,
        "server": json.loads(read.stdout.strip().splitlines()[-1]),
        "requests": proxy.records[before:],
    }


def _recomputed_signature(record: dict, secret: str) -> str:
    """SigV4 signature of the request as the server received it, recomputed with botocore and ``secret``."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    auth = AUTHORIZATION.match(record["headers"]["authorization"])
    signed = {name: record["headers"][name] for name in auth["signed"].split(";")}
    url = f"http://{record['headers']['host']}{record['path']}"
    request = AWSRequest(method=record["method"], url=url, data=record["body"], headers=signed)
    request.context["timestamp"] = record["headers"]["x-amz-date"]
    signer = SigV4Auth(
        Credentials(auth["key"], secret, record["headers"].get("x-amz-security-token")), auth["service"], auth["region"]
    )
    return signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)


def test_run_params_metrics_and_lineage_reach_the_server(managed_run):
    summary, server = managed_run["summary"], managed_run["server"]
    assert server["experiment"] == EXPERIMENT and server["run_name"] == f"{EXPERIMENT}/manual__1"
    assert server["status"] == "FINISHED"
    assert (
        server["params"]["seed"] == "7"
        and server["params"]["epochs"] == "2"
        and server["params"]["dataset_version"] == "ds-tiny"
    )
    assert {k: server["tags"][k] for k in ("git_sha", "dataset_version", "config_digest")} == {
        "git_sha": "abc123",
        "dataset_version": "ds-tiny",
        "config_digest": "cfg-1",
    }
    assert server["tags"]["weights_digest"] == summary["weights_digest"]
    assert server["train_loss_steps"] == [1, 2]  # one point per epoch
    assert server["metrics"]["train_loss"] == pytest.approx(summary["history"][-1]["train_loss"])


def test_every_request_is_sigv4_signed_for_sagemaker_mlflow(managed_run):
    requests = managed_run["requests"]
    paths = {r["path"].split("?")[0] for r in requests}
    assert {"/api/2.0/mlflow/runs/create", "/api/2.0/mlflow/runs/update"} <= paths, sorted(
        paths
    )  # the run went through the proxy
    for record in requests:
        headers = record["headers"]
        auth = AUTHORIZATION.match(headers.get("authorization", ""))
        assert auth, f"{record['method']} {record['path']} is not SigV4-signed: {headers.get('authorization')!r}"
        assert (auth["key"], auth["region"], auth["service"]) == (FAKE_KEY, REGION, SIGNING_SERVICE)
        assert auth["date"] == headers["x-amz-date"][:8]
        assert {"host", "x-amz-date", "x-amz-content-sha256"} <= set(auth["signed"].split(";"))
        assert (
            headers["x-amz-content-sha256"] == hashlib.sha256(record["body"]).hexdigest()
        )  # the body is what was signed
        assert headers["x-mlflow-sm-tracking-server-arn"] == ARN  # SageMaker routes on it
        assert _recomputed_signature(record, FAKE_KEY) == auth["signature"], f"{record['method']} {record['path']}"
    # the check can fail: the same request does not verify under another secret
    assert (
        _recomputed_signature(requests[0], "not-the-secret")
        != AUTHORIZATION.match(requests[0]["headers"]["authorization"])["signature"]
    )


def test_artifacts_go_to_the_experiment_s3_location(managed_run, artifact_bucket, moto_simulator_endpoint):
    import boto3

    server, run_id = managed_run["server"], managed_run["summary"]["mlflow_run_id"]
    location = f"s3://{artifact_bucket}/mlartifacts/{EXPERIMENT}"
    assert server["experiment_location"] == location  # set by retrain.tracking, not left to the server's default
    assert server["artifact_uri"] == f"{location}/{run_id}/artifacts"
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_simulator_endpoint,
        region_name=REGION,
        aws_access_key_id=FAKE_KEY,
        aws_secret_access_key=FAKE_KEY,
    )
    body = s3.get_object(
        Bucket=artifact_bucket, Key=f"mlartifacts/{EXPERIMENT}/{run_id}/artifacts/training_summary.json"
    )["Body"].read()
    assert json.loads(body)["weights_digest"] == managed_run["summary"]["weights_digest"]


def test_without_credentials_the_job_fails_before_sending(
    channels, proxy, artifact_bucket, moto_simulator_endpoint, tmp_path
):
    env = {
        k: v
        for k, v in _managed_env(tmp_path, proxy, artifact_bucket, moto_simulator_endpoint).items()
        if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    }
    before = len(proxy.records)
    spec = _training_spec(channels, tmp_path)
    proc = _run_training(spec, env)
    assert proc.returncode != 0
    assert "Unable to locate credentials" in proc.stderr, proc.stderr[-3000:]
    assert len(proxy.records) == before  # nothing unsigned left the job
    assert not spec.result_file.exists()


def test_without_the_plugin_mlflow_refuses_the_arn(proxy, artifact_bucket, moto_simulator_endpoint, tmp_path):
    env = {
        **_managed_env(tmp_path, proxy, artifact_bucket, moto_simulator_endpoint),
        "PYTHONPATH": os.pathsep.join([str(INCLUDE_DIR), str(PROJECT_ROOT / "plugins")]),
    }
    before = len(proxy.records)
    proc = subprocess.run(
        [str(job_python()), str(JOBSIDE / "ensure_experiment_without_plugin.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert f"unsupported URI '{ARN}'" in proc.stderr, proc.stderr[-3000:]
    assert len(proxy.records) == before
