"""build_dataset as Glue runs it, on moto (an AWS simulator), never AWS: the shipped intent config's Glue
request, the code bundle staged in the simulated S3, and the job bridge running the staged script with Glue's
arguments (tests/moto_job_bridge.py). Each test reproduces a way the first real Glue run used to fail."""

from __future__ import annotations

import contextlib
import time
import uuid
from datetime import UTC, datetime

import pytest

from airflowstack import tiny_rows, write_csv
from moto_job_bridge import stage_code_bundle, stage_glue_wheels
from retrain import jobs
from retrain.aws.glue import create_job_request, start_job_run_request
from retrain.aws.locations import CodeBundle
from retrain.aws.names import BAD_INPUT_MARKER
from retrain.aws.requests import glue_kwargs
from retrain.config import load_config
from retrain.snapshot import snapshot_raw
from retrain.store import S3Store
from retrain_tools.seed import publish_golden
from simulated_account import SimulatedAccount, shipped_config
from tinydata import PROJECT_ROOT

pytestmark = pytest.mark.aws

START, END = datetime(2026, 9, 7, tzinfo=UTC), datetime(2026, 9, 14, tzinfo=UTC)


@pytest.fixture
def glue_run(moto_simulator_endpoint, simulated_jobs, tmp_path):
    """Start build_dataset of the shipped intent config on the simulator's Glue; returns a function of the raw rows
    that waits for the run and returns (JobRun, store, kwargs). Only the account id differs (its own simulated
    account)."""
    account = SimulatedAccount.create(moto_simulator_endpoint)
    config = load_config(shipped_config(tmp_path, "intent", account.account_id))
    account.provision([config], topics=False, groups=False)
    aws, s3 = config.aws, account.client("s3")
    store = S3Store(aws.dataset_bucket, aws.artifact_bucket, aws.golden_bucket, client=s3)
    digest = stage_code_bundle(s3, aws.artifact_bucket, PROJECT_ROOT / "config" / "models", PROJECT_ROOT)
    wheels = stage_glue_wheels(s3, aws.artifact_bucket, digest, PROJECT_ROOT)
    code = CodeBundle(aws.artifact_bucket, "0123456789abcdef0123456789abcdef01234567", digest, wheels)
    publish_golden(store, config, PROJECT_ROOT / config.sample_data.golden, config.data.golden_version)  # pinned

    def run(rows):
        write_csv(tmp_path / "part.csv", rows)
        store.write_once_bytes(f"raw/intent/dt={START.date()}/part-00000.csv", (tmp_path / "part.csv").read_bytes())
        manifest = snapshot_raw(store, "intent", START, END)
        ctx = jobs.RunContext("retrain_intent", f"manual__{uuid.uuid4().hex}", START, END)
        location = jobs.write_once_json(
            store, f"{jobs.try_key(config, ctx, 'snapshot_raw')}/raw_manifest.json", manifest
        )
        ctx.upstream["snapshot_raw"] = {"manifest_path": location}
        kwargs = glue_kwargs(config, ctx, code)
        glue = account.client("glue")
        with contextlib.suppress(glue.exceptions.AlreadyExistsException):
            glue.create_job(**create_job_request(kwargs))
        run_id = glue.start_job_run(**start_job_run_request(kwargs))["JobRunId"]
        for _ in range(600):
            described = glue.get_job_run(JobName=kwargs["job_name"], RunId=run_id)["JobRun"]
            if described["JobRunState"] not in ("STARTING", "RUNNING"):
                return described, store, kwargs
            time.sleep(0.5)
        raise AssertionError(f"Glue run {run_id} did not finish")

    return run


def test_build_dataset_runs_on_glue_from_the_staged_bundle_with_the_shipped_labels_file(glue_run):
    """The labels file arrives as an s3:// URI in the code bundle: it used to be read with Path(...)."""
    rows = tiny_rows(PROJECT_ROOT / "data" / "banking77" / "train.csv", 8)
    described, store, kwargs = glue_run(rows)
    assert described["JobRunState"] == "SUCCEEDED", described.get("ErrorMessage")
    assert kwargs["script_args"]["--labels-file"].startswith("s3://")
    result = store.read_json(store.key_of(kwargs["script_args"]["--result-file"]))
    manifest = store.verify_version(f"datasets/intent/{result['dataset_version']}")
    assert manifest["counts"]["train"] + manifest["counts"]["validation"] > 0
    splits = store.key_of(kwargs["script_args"]["--result-file"]).rsplit("/", 1)[0] + "/splits/train"
    assert any("part-" in key for key in store.list_objects(splits)), "Spark wrote its split by its s3:// URI"


def test_a_rejected_input_on_glue_carries_the_no_retry_marker(glue_run):
    rows = [*tiny_rows(PROJECT_ROOT / "data" / "banking77" / "train.csv", 8), ("what is this", "no_such_intent")]
    described, _, _ = glue_run(rows)
    assert described["JobRunState"] == "FAILED"
    assert BAD_INPUT_MARKER in described["ErrorMessage"] and "no_such_intent" in described["ErrorMessage"]


DRIVER_COPY_SCRIPT = '''\
"""build_dataset's former pattern: copy an S3 input to the driver's disk and hand Spark that local path."""
import sys, tempfile

import boto3
from pyspark.sql import SparkSession

uri = sys.argv[sys.argv.index("--input") + 1]
spark = SparkSession.builder.master("local[1]").appName("driver-copy").getOrCreate()
if "--copy-to-driver" in sys.argv:
    bucket, key = uri[len("s3://"):].split("/", 1)
    local = tempfile.mkdtemp() + "/part.csv"
    boto3.client("s3").download_file(bucket, key, local)
    uri = local  # executors on other machines have no such file
print("rows", spark.read.csv(uri, header=True).count())
'''


@pytest.mark.parametrize("copy_to_driver", [False, True], ids=["by-uri", "copied-to-the-driver"])
def test_spark_reading_a_copy_on_the_drivers_disk_fails_as_on_a_cluster(
    moto_simulator_endpoint, simulated_jobs, copy_to_driver
):
    """On a Glue cluster the executors run on other machines, so a file copied to the driver's /tmp is not there for
    them: build_dataset once did that with its raw and golden inputs. The simulator's Spark sees only the S3 mirror, so
    the same script fails here, while reading the URI works."""
    account = SimulatedAccount.create(moto_simulator_endpoint)
    s3, glue = account.client("s3"), account.client("glue")
    bucket = f"retrain-datasets-{account.account_id}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="raw/intent/dt=2026-09-07/part-00000.csv", Body=b"text,category\nhi,greet\n")
    s3.put_object(Bucket=bucket, Key="code/driver_copy.py", Body=DRIVER_COPY_SCRIPT.encode())
    name = f"driver-copy-{uuid.uuid4().hex[:8]}"
    glue.create_job(
        Name=name,
        Role=f"arn:aws:iam::{account.account_id}:role/retrain-jobs",
        Command={"Name": "glueetl", "ScriptLocation": f"s3://{bucket}/code/driver_copy.py", "PythonVersion": "3"},
        GlueVersion="5.0",
    )
    arguments = {"--input": f"s3://{bucket}/raw/intent/dt=2026-09-07/part-00000.csv"}
    if copy_to_driver:
        arguments["--copy-to-driver"] = "true"
    run_id = glue.start_job_run(JobName=name, Arguments=arguments)["JobRunId"]
    for _ in range(600):
        described = glue.get_job_run(JobName=name, RunId=run_id)["JobRun"]
        if described["JobRunState"] not in ("STARTING", "RUNNING"):
            break
        time.sleep(0.5)
    if copy_to_driver:
        assert described["JobRunState"] == "FAILED", "the simulator let Spark read the driver's local disk"
        assert "part.csv" in described.get("ErrorMessage", ""), described.get("ErrorMessage")
    else:
        assert described["JobRunState"] == "SUCCEEDED", described.get("ErrorMessage")
