"""train_model's aws operator, run synchronously against moto (an AWS simulator), never AWS.

The operator builds its CreateTrainingJob request at run time and the provider's operator sends it
to the simulator. moto runs no container; ``simulated_jobs`` (tests/moto_job_bridge.py) runs the
real training script on the channels the request names and uploads the model.tar.gz where
SageMaker would. The XCom is then read back from that archive. A job whose script fails is
reported as SageMaker reports one: status Failed with a FailureReason, which the task must show.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest

from basemodels import upload_staged_base_models  # tests/ is on pytest's pythonpath
from moto_job_bridge import stage_code_bundle
from retrain.aws.names import job_name
from retrain.config import load_model
from tinydata import PROJECT_ROOT, tiny_channels

RUN_ID = "scheduled__2026-09-14T00:00:00+00:00"
FAILING_RUN_ID = "manual__2026-09-15T10:00:00+00:00"  # job names are unique per run: the simulator keeps every job
GIT_SHA = "0123456789abcdef0123456789abcdef01234567"
CODE_DIGEST = "c0de" * 16  # deploy-manifest.json's code_digest, as startup.sh exports it


class FakeTI:
    """The upstream result train_model reads (build_dataset's dataset version), as the task instance hands it over."""

    try_number = 1

    def __init__(self, dataset_version: str) -> None:
        self.dataset_version = dataset_version

    def xcom_pull(self, task_ids: str):
        return {"build_dataset": {"dataset_version": self.dataset_version}}.get(task_ids)


@pytest.fixture
def simulated_connection(simulator_env, simulated_jobs, tmp_path, monkeypatch):
    """aws_default pointing at the simulator; synchronous operators polling every second; the shipped intent config,
    unmodified (its base model staged on the simulator by the deploy tool), whose buckets exist there; tiny data."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"region_name": "us-east-1", "endpoint_url": simulator_env},
            }
        ),
    )
    monkeypatch.setenv("RETRAIN_AWS_DEFERRABLE", "false")
    monkeypatch.setenv("RETRAIN_AWS_CHECK_INTERVAL", "1")
    monkeypatch.setenv("RETRAIN_GIT_SHA", GIT_SHA)
    monkeypatch.setenv("RETRAIN_CODE_DIGEST", CODE_DIGEST)
    monkeypatch.setenv("RETRAIN_BACKEND", "aws")
    (tmp_path / "config").mkdir()
    shutil.copyfile(PROJECT_ROOT / "config" / "models" / "intent.yaml", tmp_path / "config" / "intent.yaml")
    monkeypatch.setenv("RETRAIN_CONFIG_DIR", str(tmp_path / "config"))
    s3 = boto3.client(
        "s3",
        endpoint_url=simulator_env,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    aws = load_model("intent").aws
    for bucket in (aws.dataset_bucket, aws.artifact_bucket):
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
    # what `bin/retrain deploy push` uploads: the bridge runs the job from this bundle, not from the checkout
    monkeypatch.setenv(
        "RETRAIN_CODE_DIGEST", stage_code_bundle(s3, aws.artifact_bucket, tmp_path / "config", PROJECT_ROOT)
    )
    upload_staged_base_models(s3, aws.artifact_bucket, [load_model("intent")], tmp_path / "deploy")
    return SimpleNamespace(endpoint=simulator_env, s3=s3, aws=aws, jobs=simulated_jobs)


def _sagemaker(connection):
    """A SageMaker client of the simulator, with the fake credentials the tests use."""
    return boto3.client(
        "sagemaker",
        endpoint_url=connection.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _upload_channels(connection, dataset_version: str, root: Path, bad_label: bool = False) -> None:
    """A tiny Banking77 split as build_dataset publishes it, on the simulator's dataset bucket."""
    channels = tiny_channels(root, 8, 2)
    for channel in ("train", "validation"):
        body = (channels[channel] / f"{channel}.jsonl").read_text()
        if bad_label:
            body = body.replace('"label": "card_arrival"', '"label": "no_such_intent"')
        connection.s3.put_object(
            Bucket=connection.aws.dataset_bucket,
            Key=f"datasets/intent/{dataset_version}/{channel}/{channel}.jsonl",
            Body=body.encode(),
        )


def _operator_and_context(dataset_version: str, run_id: str = RUN_ID):
    from retrain_airflow.aws_operators import aws_job_operator
    from retrain_airflow.factory import UPSTREAM_RESULTS

    operator = aws_job_operator(load_model("intent"), "train_model", UPSTREAM_RESULTS["train_model"], {})
    operator.print_log = False  # the simulator keeps no CloudWatch log streams for its jobs
    context = {
        "ti": FakeTI(dataset_version),
        "dag_run": SimpleNamespace(dag_id="retrain_intent", run_id=run_id),
        "params": {},
        "data_interval_start": datetime(2026, 9, 7, tzinfo=UTC),
        "data_interval_end": datetime(2026, 9, 14, tzinfo=UTC),
    }
    return operator, context


def test_train_model_runs_its_request_and_returns_the_summary_from_the_model_archive(simulated_connection, tmp_path):
    dataset_version = "ds-0000000000000001"
    _upload_channels(simulated_connection, dataset_version, tmp_path)
    operator, context = _operator_and_context(dataset_version)
    request = operator.build_config(context)
    name = job_name("intent", "train_model", RUN_ID, 1)
    assert request["TrainingJobName"] == name

    result = operator.execute(context)

    sagemaker = _sagemaker(simulated_connection)
    described = sagemaker.describe_training_job(TrainingJobName=name)
    assert described["TrainingJobStatus"] == "Completed"
    assert described["HyperParameters"] == request["HyperParameters"]  # what the simulator received
    ran = [job for job in simulated_connection.jobs.summary() if job["name"] == name]
    assert [job["exit_code"] for job in ran] == [0], "the bridge ran the training script once"
    assert result["training_job_name"] == name and result["dataset_version"] == dataset_version
    assert len(result["weights_digest"]) == 64  # from training_summary.json inside the model.tar.gz
    assert (
        result["model_dir"]
        == result["model_data_url"]
        == f"{request['OutputDataConfig']['S3OutputPath']}/{name}/output/model.tar.gz"
    )


def test_a_failed_training_job_fails_the_task_with_its_failure_reason(simulated_connection, tmp_path):
    dataset_version = "ds-00000000000000bd"
    _upload_channels(simulated_connection, dataset_version, tmp_path, bad_label=True)
    operator, context = _operator_and_context(dataset_version, FAILING_RUN_ID)
    sagemaker = _sagemaker(simulated_connection)
    group = simulated_connection.aws.model_package_group
    before = (
        sagemaker.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
        if _group_exists(sagemaker, group)
        else []
    )

    with pytest.raises(Exception) as failed:
        operator.execute(context)

    name = job_name("intent", "train_model", FAILING_RUN_ID, 1)
    described = sagemaker.describe_training_job(TrainingJobName=name)
    assert described["TrainingJobStatus"] == "Failed"
    assert "no_such_intent" in described["FailureReason"], described["FailureReason"]  # the script's own error
    assert "no_such_intent" in str(failed.value), "the task's error (its log) must carry the job's FailureReason"
    after = (
        sagemaker.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
        if _group_exists(sagemaker, group)
        else []
    )
    assert after == before, "a failed training job must leave no model package"


def _group_exists(sagemaker, group: str) -> bool:
    return any(
        g["ModelPackageGroupName"] == group
        for g in sagemaker.list_model_package_groups()["ModelPackageGroupSummaryList"]
    )


def test_a_retry_waits_for_the_earlier_trys_job_instead_of_starting_a_second(simulated_connection, tmp_path):
    """Try 1 created its training job and stopped polling (its worker died, its trigger was lost); the job still runs.
    Try 2 waits for that job and returns its result: it used to start a second job on the same checkpoint prefix."""
    dataset_version = "ds-00000000000000a7"
    run_id = "manual__2026-09-16T10:00:00+00:00"
    _upload_channels(simulated_connection, dataset_version, tmp_path)
    operator, context = _operator_and_context(dataset_version, run_id)
    sagemaker = _sagemaker(simulated_connection)
    bridge = simulated_connection.jobs
    bridge.startup_s = 8.0  # try 1's job is still InProgress when try 2 starts
    try:
        sagemaker.create_training_job(**operator.build_config(context))  # what try 1 sent
        context["ti"].try_number = 2
        result = operator.execute(context)
    finally:
        bridge.startup_s = 0.0
    first, second = (job_name("intent", "train_model", run_id, attempt) for attempt in (1, 2))
    assert result["training_job_name"] == first and len(result["weights_digest"]) == 64
    assert [job["name"] for job in bridge.summary() if job["name"] in (first, second)] == [first]
    with pytest.raises(sagemaker.exceptions.ClientError):
        sagemaker.describe_training_job(TrainingJobName=second)
