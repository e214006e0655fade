"""retrain_intent on the aws backend, end to end under a real Airflow scheduler, against moto (an AWS simulator).

Real here: Airflow 3.3 (``airflow standalone``) parsing the DAG with ``RETRAIN_BACKEND=aws``, under FAB, MWAA's
auth manager, so that the approver is matched by numeric user id as on MWAA (``fab_users``); the
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

The config is the shipped ``config/models/intent.yaml``, unmodified but for the account id
(``tests/simulated_account.py`` lists that edit and its reason): its 30 epochs, its floors, its latency ceilings and
its golden pin. The data is what ``bin/retrain seed`` lands, on S3: the sample raw rows over six weekly partitions,
and the pinned golden set in full."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest

from airflowstack import TinyProject, run_report, standalone_airflow, user_factory  # tests/ is on pythonpath
from basemodels import upload_staged_base_models  # tests/ is on pytest's pythonpath
from dagshape import AWS_TASKS  # tests/ is on pytest's pythonpath
from moto_job_bridge import dumps, stage_code_bundle, stage_glue_wheels
from retrain import ledger
from retrain.config import load_config
from retrain.jobs import run_key
from retrain.paths import PROJECT_ROOT
from retrain.store import S3Store
from retrain_tools.airflow_api import wait_until
from retrain_tools.seed import seed
from simulated_account import SimulatedAccount, shipped_config

pytestmark = pytest.mark.aws

GIT_SHA = "e2e0" * 10  # the deployed code's git sha (startup.sh exports it); the code digest is the staged bundle's
BENCH_FIGURES_ENV = "RETRAIN_BENCH_FIGURES"
JOB_STARTUP_S = 15.0  # the least time a simulated job stays InProgress; real ones take minutes to provision


@pytest.fixture(scope="module")
def aws_stack(moto_simulator_endpoint, simulated_jobs, simulated_tracking_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("aws-e2e")
    account = SimulatedAccount.create(moto_simulator_endpoint)
    project = TinyProject(root)  # the directories the integration tier has; its local store stays empty
    config = load_config(shipped_config(project.config_dir, "intent", account.account_id))
    account.provision([config])
    project.sync_dags()

    # What `bin/retrain seed` lands, on S3: the sample raw rows over the last six weekly partitions, and golden v1 (the
    # content the shipped config pins).
    s3 = account.client("s3")
    aws = config.aws
    store = S3Store(aws.dataset_bucket, aws.artifact_bucket, aws.golden_bucket, client=s3)
    seeded = seed(store, config)
    start = seeded["intervals"][-1][0]
    # The code bundle as `bin/retrain deploy push` stages it: the bridge runs every job from it, never the checkout.
    code_digest = stage_code_bundle(s3, aws.artifact_bucket, project.config_dir, PROJECT_ROOT)
    glue_wheels = stage_glue_wheels(s3, aws.artifact_bucket, code_digest, PROJECT_ROOT)
    upload_staged_base_models(s3, aws.artifact_bucket, [config], root / "deploy")

    aws_env = {
        **account.env(),
        "AWS_SHARED_CREDENTIALS_FILE": str(root / "no-credentials"),
        "AWS_CONFIG_FILE": str(root / "no-config"),
    }
    buckets_env = {
        "RETRAIN_DATASET_BUCKET": aws.dataset_bucket,
        "RETRAIN_ARTIFACT_BUCKET": aws.artifact_bucket,
        "RETRAIN_GOLDEN_BUCKET": aws.golden_bucket,
    }
    no_routing = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "SAGEMAKER_"))}
    mlflow_port = simulated_tracking_server
    bridge = simulated_jobs
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
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(account.airflow_connection()),
    }
    bridge.startup_s = JOB_STARTUP_S  # deferred tasks under a scheduler: see MotoLocalJobBridge
    try:
        with standalone_airflow(
            env, root, ("retrain_intent",), "aws-standalone.log", fab_users=fab_users(config)
        ) as client:
            started = time.monotonic()
            client.set_paused("retrain_intent", False)
            run = wait_until(lambda: client.run_for_interval("retrain_intent", start), 600, "the scheduled run")
            run_id = run["dag_run_id"]
            log = root / "aws-standalone.log"
            assert client.wait_for_approval_request("retrain_intent", run_id), (
                log.read_text()[-3000:] + dumps(bridge.jobs[first_job:]) + run_report(client, "retrain_intent", run_id)
            )
            approval_at = time.monotonic()
            asked = client.hitl_detail("retrain_intent", run_id, "await_approval")
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
                "config": config,
                "jobs": bridge.jobs[first_job:],
                "client": client,
                "endpoint": moto_simulator_endpoint,
                "mlflow_port": mlflow_port,
                "log": log,
                "root": root,
                "project": project,
                "seconds": {"to_approval": approval_at - started, "total": finished - started},
                "approval": {
                    "asked": asked,
                    "answered": client.hitl_detail("retrain_intent", run_id, "await_approval"),
                },
            }
    finally:
        bridge.startup_s = 0.0


def fab_users(config) -> tuple[tuple[str, str], ...]:
    """The FAB users of the e2e Airflow after ``admin`` (id 1), in creation order: FAB numbers users as they are made,
    so Viewers fill the ids below the one the shipped config gives its approver (``approval.fab_user_ids``, a
    placeholder like the account id, here met rather than edited), then the approver, with MWAA's User role."""
    (approver,) = config.approval.assigned_users
    fillers = int(config.approval.fab_user_ids[approver]) - 2
    return (*((f"viewer{i}", "Viewer") for i in range(2, 2 + fillers)), (approver, "User"))


def _why(stack) -> str:
    return stack["log"].read_text()[-4000:] + "\nbridge jobs: " + dumps(stack["jobs"])


def test_every_task_succeeds_on_the_aws_backend(aws_stack):
    assert aws_stack["states"] == {task: "success" for task in AWS_TASKS}, _why(aws_stack)


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
    # The shipped config's floors (macro F1 and accuracy 0.85) on the pinned golden set: the gate passed on them.
    challenger, floors = metrics["challenger"], aws_stack["config"].gate.floors
    assert challenger["macro_f1"] >= floors["macro_f1"] and challenger["accuracy"] >= floors["accuracy"], challenger
    assert metrics["champion"] is None
    gate = store.read_json(f"{key}/gate_on_metrics/try-1/gate.json")
    assert gate["decision"] == "pass"
    assert b"Gate: PASS" in store.read_bytes(f"{key}/gate_on_metrics/try-1/report.html")
    job = next(j["name"] for j in aws_stack["jobs"] if j["kind"] == "training")
    assert store.exists(f"{key}/train_model/try-1/model/{job}/output/model.tar.gz")  # <S3OutputPath>/<job name>/output/
    assert not aws_stack["project"].store_root.exists(), "the aws backend wrote to the local store"


def test_the_approver_is_matched_by_fab_user_id_as_on_mwaa(aws_stack):
    """Under FAB, HITL compares user ids: the request names the approver by the shipped config's FAB id, and the
    answer that released the run came from that id."""
    approval, config = aws_stack["approval"], aws_stack["config"]
    fab_id = config.approval.fab_user_ids["alice"]
    assert [(u["id"], u["name"]) for u in approval["asked"]["assigned_users"]] == [(fab_id, "alice")]
    assert approval["answered"]["responded_by_user"] == {"id": fab_id, "name": "alice"}
    assert approval["answered"]["chosen_options"] == ["Approve"]


def test_promotion_approves_the_package_and_appends_the_s3_ledger(aws_stack):
    entries = ledger.verify(aws_stack["store"], "intent")
    assert [(e["action"], e["to_version"], e["actor"], e["reason"]) for e in entries] == [
        ("promote", 1, "alice", "aws e2e: first model")
    ]
    assert entries[0]["model_dir"].endswith("/output/model.tar.gz") and len(entries[0]["weights_digest"]) == 64
    store = aws_stack["store"]  # the archive's hash, recorded at promotion, is what a rollback checks
    assert entries[0]["archive_sha256"] == store.sha256_of(store.key_of(entries[0]["model_dir"]))
    account, aws = aws_stack["account"], aws_stack["config"].aws
    package = account.client("sagemaker").describe_model_package(
        ModelPackageName=f"arn:aws:sagemaker:{aws.region}:{account.account_id}:model-package/{aws.model_package_group}/1"
    )
    assert package["ModelApprovalStatus"] == "Approved"
    # Lineage: moto's UpdateModelPackage drops CustomerMetadataProperties (AWS keeps them), so read MetadataProperties.
    assert package["MetadataProperties"]["GeneratedBy"] == f"retrain_intent/{aws_stack['run_id']}"
    assert package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == entries[0]["model_dir"]


def test_the_first_version_serves_100_percent_of_its_sagemaker_endpoint(aws_stack):
    """A first model has no champion to shadow or canary against: the stage passes through, and promote_model creates
    the endpoint with the version as its one variant, and that variant's alarms (tests/aws/test_deployment_simulated.py
    runs shadow, canary, rollback and promotion against a serving champion)."""
    states = aws_stack["states"]
    assert all(states[task] == "success" for task in ("deploy_shadow", "observe_shadow", "start_canary"))
    sagemaker = aws_stack["account"].client("sagemaker")
    described = sagemaker.describe_endpoint(EndpointName="retrain-intent")
    assert described["EndpointStatus"] == "InService"
    assert [(v["VariantName"], v["CurrentWeight"]) for v in described["ProductionVariants"]] == [("v1", 1.0)]
    model = sagemaker.describe_model(ModelName="retrain-intent-v1")["PrimaryContainer"]
    promoted = ledger.verify(aws_stack["store"], "intent")[-1]  # what promote_model approved
    assert (model["ModelDataUrl"], model["Environment"]["RETRAIN_WEIGHTS_DIGEST"]) == (
        promoted["model_dir"],
        promoted["weights_digest"],
    )
    alarms = aws_stack["account"].client("cloudwatch").describe_alarms(AlarmNamePrefix="retrain-intent-v1-")
    assert len(alarms["MetricAlarms"]) == 2


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
