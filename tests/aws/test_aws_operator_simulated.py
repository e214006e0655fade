"""train_model's aws operator, run synchronously against moto (an AWS simulator), never AWS.

The operator builds its CreateTrainingJob request at run time, the provider's operator sends
it to the simulator, and the XCom is read back from the model.tar.gz the contract puts on S3.
moto runs no container: the simulator marks the job Completed, so this test uploads the
model.tar.gz a training script would have left, and checks the request the simulator received.
"""

from __future__ import annotations

import io
import json
import tarfile
from datetime import datetime, timezone
from types import SimpleNamespace

import boto3
import pytest

from retrain.aws.names import job_name
from retrain.config import load_model

RUN_ID = "scheduled__2026-09-14T00:00:00+00:00"
GIT_SHA = "0123456789abcdef0123456789abcdef01234567"
CODE_DIGEST = "c0de" * 16  # deploy-manifest.json's code_digest, as startup.sh exports it
DATASET_VERSION = "ds-5f1c0a9e2b7d"


class FakeTI:
    try_number = 1

    def xcom_pull(self, task_ids: str):
        return {"build_dataset": {"dataset_version": DATASET_VERSION}}.get(task_ids)


@pytest.fixture
def simulated_connection(simulator_env, monkeypatch):
    """aws_default pointing at the simulator; synchronous operators polling every second."""
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"region_name": "us-east-1", "endpoint_url": simulator_env}}))
    monkeypatch.setenv("RETRAIN_AWS_DEFERRABLE", "false")
    monkeypatch.setenv("RETRAIN_AWS_CHECK_INTERVAL", "1")
    monkeypatch.setenv("RETRAIN_GIT_SHA", GIT_SHA)
    monkeypatch.setenv("RETRAIN_CODE_DIGEST", CODE_DIGEST)
    monkeypatch.setenv("RETRAIN_BACKEND", "aws")
    return simulator_env


def test_train_model_sends_its_request_to_the_simulator_and_returns_the_summary(simulated_connection, simulator_s3):
    from retrain_airflow.aws_operators import aws_job_operator
    from retrain_airflow.factory import UPSTREAM_RESULTS

    config = load_model("intent")
    aws = config.aws
    for bucket in (aws.dataset_bucket, aws.artifact_bucket):
        try:
            simulator_s3.create_bucket(Bucket=bucket)
        except simulator_s3.exceptions.BucketAlreadyOwnedByYou:
            pass
    for channel in ("train", "validation"):  # the provider refuses a job whose channel prefix is missing
        simulator_s3.put_object(Bucket=aws.dataset_bucket, Key=f"datasets/intent/{DATASET_VERSION}/{channel}/part-0.jsonl", Body=b"{}\n")

    operator = aws_job_operator(config, "train_model", UPSTREAM_RESULTS["train_model"], {})
    operator.print_log = False  # the simulator keeps no CloudWatch log streams for its jobs
    context = {"ti": FakeTI(), "dag_run": SimpleNamespace(dag_id=config.dag_id, run_id=RUN_ID), "params": {},
               "data_interval_start": datetime(2026, 9, 7, tzinfo=timezone.utc), "data_interval_end": datetime(2026, 9, 14, tzinfo=timezone.utc)}
    request = operator.build_config(context)
    name = job_name("intent", "train_model", RUN_ID, 1)
    assert request["TrainingJobName"] == name
    # What the training script leaves in SM_MODEL_DIR, as SageMaker would upload it.
    summary = {"weights_digest": "ab" * 32, "dataset_version": DATASET_VERSION, "mlflow_run_id": "0f3c", "model_dir": "/opt/ml/model"}
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        data = json.dumps(summary).encode()
        info = tarfile.TarInfo("training_summary.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    model_key = f"{request['OutputDataConfig']['S3OutputPath'].split('/', 3)[3]}/{name}/output/model.tar.gz"
    simulator_s3.put_object(Bucket=aws.artifact_bucket, Key=model_key, Body=archive.getvalue())

    result = operator.execute(context)

    sagemaker = boto3.client("sagemaker", endpoint_url=simulated_connection, region_name="us-east-1",
                             aws_access_key_id="testing", aws_secret_access_key="testing")
    described = sagemaker.describe_training_job(TrainingJobName=name)
    assert described["TrainingJobStatus"] == "Completed"
    assert described["HyperParameters"] == request["HyperParameters"]  # what the simulator received
    assert described["HyperParameters"]["base-model"] == "distilbert-base-uncased"
    assert result["weights_digest"] == summary["weights_digest"] and result["training_job_name"] == name
    assert result["model_dir"] == result["model_data_url"] == f"s3://{aws.artifact_bucket}/{model_key}"
