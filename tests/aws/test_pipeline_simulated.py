"""retrain_intent on the aws backend, end to end under a real Airflow scheduler, against moto (an AWS simulator).

Real here: Airflow 3.3 (``airflow standalone``) parsing the DAG with ``RETRAIN_BACKEND=aws``; the
Amazon provider's GlueJobOperator, SageMakerTrainingOperator and SageMakerProcessingOperator,
deferred to the triggerer while jobs run, as on MWAA; every request built at run time and checked
against botocore's service model before it is sent; the job scripts (validation, the Spark ETL,
training, evaluation) reading and writing S3 through ``S3Store``; the S3 ledger; the
``sagemaker-mlflow`` plugin signing requests to a real ``mlflow server``; approval over REST.

Simulated: AWS itself. moto serves S3, Glue, SageMaker (jobs and the model registry) and SNS.
moto runs no job, so ``moto_job_bridge.MotoLocalJobBridge`` runs each one through the local job
environment on the S3 inputs its request names and puts the outputs where the request says
SageMaker or Glue would (see its docstring for what it does not simulate). The managed MLflow
server is a local ``mlflow server`` reached through ``SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import boto3
import pytest

from airflowstack import (
    TinyProject,
    run_report,
    standalone_airflow,
    tiny_config,
    user_factory,
    write_csv,
)  # tests/ is on pythonpath
from basemodels import upload_staged_base_models  # tests/ is on pytest's pythonpath
from dagshape import TASKS  # tests/ is on pytest's pythonpath
from moto_job_bridge import dumps, stage_code_bundle, stage_glue_wheels
from retrain import ledger
from retrain.config import load_config
from retrain.jobs import run_key
from retrain.paths import PROJECT_ROOT
from retrain.store import S3Store
from retrain_tools.airflow_api import wait_until
from retrain_tools.seed import publish_golden

pytestmark = pytest.mark.aws

REGION = "us-east-1"
GIT_SHA = "e2e0" * 10  # the deployed code's git sha (startup.sh exports it); the code digest is the staged bundle's
BENCH_FIGURES_ENV = "RETRAIN_BENCH_FIGURES"
JOB_STARTUP_S = 15.0  # the least time a simulated job stays InProgress; real ones take minutes to provision
SIMULATED = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _client(service: str, endpoint: str):
    return boto3.client(
        service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def _simulated_account(endpoint: str, tag: str) -> dict[str, str]:
    """Buckets (golden with Object Lock, as the infrastructure template makes it), the alert topic and the
    model package group, on the simulator."""
    s3 = _client("s3", endpoint)
    buckets = {kind: f"retrain-e2e-{kind}-{tag}" for kind in ("datasets", "artifacts", "golden")}
    s3.create_bucket(Bucket=buckets["datasets"])
    s3.create_bucket(Bucket=buckets["artifacts"])
    s3.create_bucket(Bucket=buckets["golden"], ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(
        Bucket=buckets["golden"],
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
        },
    )
    topic = _client("sns", endpoint).create_topic(Name=f"retrain-alerts-{tag}")["TopicArn"]
    group = f"retrain-intent-{tag}"
    _client("sagemaker", endpoint).create_model_package_group(ModelPackageGroupName=group)
    return {**buckets, "topic": topic, "group": group}


SHIPPED_LABELS = Path("data/banking77/categories.json")
"""The shipped labels file: a job reads it from the staged code bundle, as on AWS (it was once swapped for a local path
the simulator could open and AWS could not)."""


def _aws_config_edits(account: dict[str, str]) -> list[tuple[str, str]]:
    """The shipped intent config's aws section pointed at the simulator's resources. tiny_config puts latency
    ceilings out of the way. The tiny data has 5 of the 77 intents, so macro F1 over the 77 is at most 5/77: the macro
    F1 floor goes to 0 (accuracy's stays)."""
    return [
        ("    macro_f1: 0.5\n", "    macro_f1: 0.0\n"),
        ("dataset_bucket: retrain-datasets-123456789012", f"dataset_bucket: {account['datasets']}"),
        ("artifact_bucket: retrain-artifacts-123456789012", f"artifact_bucket: {account['artifacts']}"),
        ("golden_bucket: retrain-golden-123456789012", f"golden_bucket: {account['golden']}"),
        ("model_package_group: retrain-intent", f"model_package_group: {account['group']}"),
        ("sns_topic_arn: arn:aws:sns:us-east-1:123456789012:retrain-alerts", f"sns_topic_arn: {account['topic']}"),
    ]


@pytest.fixture(scope="module")
def aws_stack(moto_simulator_endpoint, simulated_jobs, simulated_tracking_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("aws-e2e")
    endpoint, tag = moto_simulator_endpoint, uuid.uuid4().hex[:8]
    account = _simulated_account(endpoint, tag)
    project = TinyProject(
        root
    )  # tiny data, configs and DAG files as the integration tier has them; its local store stays empty
    config_path = tiny_config(project.config_dir, SHIPPED_LABELS, "intent", extra=tuple(_aws_config_edits(account)))
    project.sync_dags()

    # What upstream producers and `bin/retrain seed` put in the buckets: two weekly raw partitions and golden v1.
    start, rows = project.interval[0], project.rows
    s3 = _client("s3", endpoint)
    store = S3Store(account["datasets"], account["artifacts"], account["golden"], client=s3)
    for week, part in ((start - timedelta(weeks=1), rows[::2]), (start, rows[1::2])):
        write_csv(root / "part.csv", part)
        store.write_once_bytes(f"raw/intent/dt={week.date()}/part-00000.csv", (root / "part.csv").read_bytes())
    publish_golden(store, load_config(config_path), project.golden_csv, "v1")
    # The code bundle as `bin/retrain deploy push` stages it: the bridge runs every job from it, never the checkout.
    code_digest = stage_code_bundle(s3, account["artifacts"], project.config_dir, PROJECT_ROOT)
    glue_wheels = stage_glue_wheels(s3, account["artifacts"], code_digest, PROJECT_ROOT)
    upload_staged_base_models(s3, account["artifacts"], [load_config(config_path)], root / "deploy")

    aws_env = {
        **SIMULATED,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_SHARED_CREDENTIALS_FILE": str(root / "no-credentials"),
        "AWS_CONFIG_FILE": str(root / "no-config"),
    }
    buckets_env = {
        "RETRAIN_DATASET_BUCKET": account["datasets"],
        "RETRAIN_ARTIFACT_BUCKET": account["artifacts"],
        "RETRAIN_GOLDEN_BUCKET": account["golden"],
    }
    no_routing = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "SAGEMAKER_"))}
    mlflow_port = simulated_tracking_server
    bridge = simulated_jobs
    bridge.extra_env.update(buckets_env)
    first_job = len(bridge.jobs)  # the session's bridge may have run other tests' jobs before
    env = {
        **project.env(no_routing),
        **aws_env,
        **buckets_env,
        "RETRAIN_BACKEND": "aws",
        "RETRAIN_GIT_SHA": GIT_SHA,
        "RETRAIN_CODE_DIGEST": code_digest,  # what startup.sh exports from the deploy manifest
        "RETRAIN_GLUE_WHEELS": ",".join(glue_wheels),
        "RETRAIN_AWS_CHECK_INTERVAL": "2",
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"region_name": REGION, "endpoint_url": endpoint},
            }
        ),
    }
    bridge.startup_s = JOB_STARTUP_S  # deferred tasks under a scheduler: see MotoLocalJobBridge
    try:
        with standalone_airflow(env, root, ("retrain_intent",), "aws-standalone.log") as client:
            started = time.monotonic()
            client.set_paused("retrain_intent", False)
            run = wait_until(lambda: client.run_for_interval("retrain_intent", start), 120, "the scheduled run")
            run_id = run["dag_run_id"]
            log = root / "aws-standalone.log"
            assert client.wait_for_approval_request("retrain_intent", run_id), (
                log.read_text()[-3000:] + dumps(bridge.jobs[first_job:]) + run_report(client, "retrain_intent", run_id)
            )
            approval_at = time.monotonic()
            user_factory(client)("alice").respond(
                "retrain_intent", run_id, "await_approval", "Approve", {"reason": "aws e2e: first model"}
            )
            states = client.wait_for_run("retrain_intent", run_id)
            finished = time.monotonic()
            if os.environ.get(BENCH_FIGURES_ENV):  # bench/aws_pipeline.py reads these; tests assert no timings
                Path(os.environ[BENCH_FIGURES_ENV]).write_text(
                    json.dumps(
                        {
                            "wall_s": finished - started,
                            "approval_requested_after_s": approval_at - started,
                            "states": states,
                            "jobs": [
                                {k: j[k] for k in ("name", "kind", "seconds", "exit_code")}
                                for j in bridge.jobs[first_job:]
                            ],
                        }
                    )
                )
            yield {
                "run_id": run_id,
                "states": states,
                "store": store,
                "s3": s3,
                "account": account,
                "jobs": bridge.jobs[first_job:],
                "client": client,
                "endpoint": endpoint,
                "mlflow_port": mlflow_port,
                "log": log,
                "root": root,
                "project": project,
                "seconds": {"to_approval": approval_at - started, "total": finished - started},
            }
    finally:
        bridge.startup_s = 0.0


def _why(stack) -> str:
    return stack["log"].read_text()[-4000:] + "\nbridge jobs: " + dumps(stack["jobs"])


def test_every_task_succeeds_on_the_aws_backend(aws_stack):
    assert aws_stack["states"] == {task: "success" for task in TASKS}, _why(aws_stack)


def test_each_job_ran_through_the_bridge_once_and_succeeded(aws_stack):
    jobs = aws_stack["jobs"]
    assert [(j["kind"], j["exit_code"]) for j in jobs] == [
        ("processing", 0),
        ("glue", 0),
        ("training", 0),
        ("processing", 0),
    ], dumps(jobs)
    assert jobs[0]["name"].startswith("intent-validate-raw-scheduled-") and jobs[3]["name"].startswith(
        "intent-evaluate-model-"
    )


def test_outputs_are_where_sagemaker_and_glue_put_them(aws_stack):
    store, key = aws_stack["store"], f"runs/intent/{run_key(aws_stack['run_id'])}"
    built = store.read_json(f"{key}/build_dataset/try-1/result.json")  # written by the Glue script itself
    manifest = store.verify_version(f"datasets/intent/{built['dataset_version']}")  # published manifest-last, intact
    assert manifest["lineage"]["golden_version"] == "v1" and built["dataset_dir"].startswith("s3://")
    metrics = store.read_json(f"{key}/evaluate_model/try-1/metrics.json")  # the processing output, uploaded at the end
    # The tiny data has 5 of the shipped labels file's 77 intents: accuracy over them (chance 0.2), and macro F1 over
    # the 77, at most 5/77.
    challenger = metrics["challenger"]
    assert challenger["accuracy"] > 0.5 and 0 < challenger["macro_f1"] <= 5 / 77 and metrics["champion"] is None
    gate = store.read_json(f"{key}/gate_on_metrics/try-1/gate.json")
    assert gate["decision"] == "pass"
    assert b"Gate: PASS" in store.read_bytes(f"{key}/gate_on_metrics/try-1/report.html")
    job = next(j["name"] for j in aws_stack["jobs"] if j["kind"] == "training")
    assert store.exists(f"{key}/train_model/try-1/model/{job}/output/model.tar.gz")  # <S3OutputPath>/<job name>/output/
    assert not aws_stack["project"].store_root.exists(), "the aws backend wrote to the local store"


def test_promotion_approves_the_package_and_appends_the_s3_ledger(aws_stack):
    entries = ledger.verify(aws_stack["store"], "intent")
    assert [(e["action"], e["to_version"], e["actor"], e["reason"]) for e in entries] == [
        ("promote", 1, "alice", "aws e2e: first model")
    ]
    assert entries[0]["model_dir"].endswith("/output/model.tar.gz") and len(entries[0]["weights_digest"]) == 64
    store = aws_stack["store"]  # the archive's hash, recorded at promotion, is what a rollback checks
    assert entries[0]["archive_sha256"] == store.sha256_of(store.key_of(entries[0]["model_dir"]))
    sagemaker = _client("sagemaker", aws_stack["endpoint"])
    package = sagemaker.describe_model_package(
        ModelPackageName=f"arn:aws:sagemaker:{REGION}:123456789012:model-package/{aws_stack['account']['group']}/1"
    )
    assert package["ModelApprovalStatus"] == "Approved"
    # Lineage: moto's UpdateModelPackage drops CustomerMetadataProperties (AWS keeps them), so read MetadataProperties.
    assert package["MetadataProperties"]["GeneratedBy"] == f"retrain_intent/{aws_stack['run_id']}"
    assert package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == entries[0]["model_dir"]


def test_training_logged_to_the_managed_tracking_server(aws_stack):
    base = f"http://127.0.0.1:{aws_stack['mlflow_port']}/api/2.0/mlflow"
    with urllib.request.urlopen(
        f"{base}/experiments/get-by-name?experiment_name=retrain_intent", timeout=10
    ) as response:
        experiment = json.load(response)["experiment"]
    # An s3:// location under an artifact bucket's mlartifacts/ (the first aws config to create the experiment on this
    # session's server named the bucket); jobs write artifacts there themselves, as the managed server serves none.
    assert experiment["artifact_location"].startswith("s3://") and "/mlartifacts/" in experiment["artifact_location"]
    body = json.dumps({"experiment_ids": [experiment["experiment_id"]]}).encode()
    request = urllib.request.Request(f"{base}/runs/search", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        runs = json.load(response)["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs]
    ours = [
        (r["info"]["status"], t["git_sha"])
        for r, t in zip(runs, tags, strict=True)
        if t.get("airflow_run_id") == aws_stack["run_id"]
        and t.get("airflow_dag_id") == "retrain_intent"
        and t.get("git_sha") == GIT_SHA
    ]
    assert ours == [("FINISHED", GIT_SHA)], tags  # the session's server also holds other tests' runs


def test_job_seconds_are_the_jobs_own_and_fit_inside_the_tasks_that_waited_for_them(aws_stack):
    """The figures bench/aws_pipeline.py reports (tests assert no timings), checked for what they claim: each job's
    seconds are its script's start to end (the simulated provisioning wait, JOB_STARTUP_S, is not in them), each job ran
    inside the Airflow task that submitted it and stayed deferred until it finished, and the jobs ran one after another,
    so their sum is part of the run's wall time and orchestration is the rest."""
    jobs = aws_stack["jobs"]
    instances = {t["task_id"]: t for t in aws_stack["client"].task_instances("retrain_intent", aws_stack["run_id"])}
    when = lambda text: datetime.fromisoformat(text).timestamp()  # noqa: E731 - Airflow's UTC dates as Unix time
    for task, job in zip(("validate_raw", "build_dataset", "train_model", "evaluate_model"), jobs, strict=True):
        ti = instances[task]
        assert job["seconds"] == pytest.approx(job["ended_at"] - job["started_at"], abs=0.05), (task, job)
        assert when(ti["start_date"]) <= job["started_at"] < job["ended_at"] <= when(ti["end_date"]), (task, ti, job)
        assert when(ti["end_date"]) - when(ti["start_date"]) >= JOB_STARTUP_S, (task, ti)  # deferred until "Completed"
    assert all(a["ended_at"] <= b["started_at"] for a, b in pairwise(jobs)), dumps(jobs)
    job_seconds = sum(j["seconds"] for j in jobs)
    print(
        f"aws e2e on moto: {aws_stack['seconds']['total']:.1f}s total, jobs {job_seconds:.1f}s, "
        f"orchestration {aws_stack['seconds']['total'] - job_seconds:.1f}s (includes the time to answer the approval)"
    )
    assert 0 < job_seconds < aws_stack["seconds"]["total"]
