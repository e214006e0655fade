"""DAG parity between the backends, and the aws operators' run-time request building.

The DAG files are parsed in fresh interpreters (the DAG processor's view) with
``RETRAIN_BACKEND=local`` and ``=aws``: no AWS credentials, heavy modules blocked, and every
socket connection refused, so parsing that imported something heavy or called AWS fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from dagshape import DEPLOYMENT_STAGE  # tests/ is on pytest's pythonpath
from retrain.config import load_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAGS_DIR = PROJECT_ROOT / "dags"
INTENT = PROJECT_ROOT / "config" / "models" / "intent.yaml"
HEAVY = ("torch", "transformers", "pandas", "pyspark", "sagemaker", "mlflow", "great_expectations")
FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
RUN_ID = "scheduled__2026-09-14T00:00:00+00:00"
GIT_SHA = "0123456789abcdef0123456789abcdef01234567"
CODE_DIGEST = "c0de" * 16  # deploy-manifest.json's code_digest, as startup.sh exports it

SUMMARY = """
import importlib.abc, json, socket, sys
HEAVY = {heavy!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"heavy module {{name}} imported at parse time")
sys.meta_path.insert(0, Block())
calls = []
def refuse(self, address, *args):
    calls.append(str(address))
    raise OSError(f"network call to {{address}} at parse time")
socket.socket.connect = refuse
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={dags!r})
def task_summary(task):
    return {{"upstream": sorted(task.upstream_task_ids), "retries": task.retries,
             "retry_delay": str(task.retry_delay), "max_retry_delay": str(task.max_retry_delay),
             "execution_timeout": str(task.execution_timeout), "trigger_rule": str(task.trigger_rule),
             "max_active_tis_per_dag": task.max_active_tis_per_dag,
             "classes": [c.__module__ + "." + c.__name__ for c in type(task).__mro__],
             "assigned_users": getattr(task, "assigned_users", None),
             "deferrable": getattr(task, "deferrable", None),
             "max_attempts": getattr(task, "max_attempts", None) or getattr(task, "waiter_max_attempts", None),
             "templated": list(task.template_fields),
             "callbacks": [type(c).__name__ for c in (task.on_failure_callback or [])]}}
def schedule(timetable):
    return [getattr(timetable, "summary", None), getattr(timetable, "_expression", None),
            str(getattr(timetable, "_timezone", None))]
dags = {{dag_id: {{"schedule": schedule(dag.timetable), "timetable": type(dag.timetable).__name__,
                  "start_date": str(dag.start_date), "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
                  "params": dag.params.dump(), "native": dag.render_template_as_native_obj,
                  "tasks": {{t.task_id: task_summary(t) for t in dag.tasks}}}} for dag_id, dag in bag.dags.items()}}
print(json.dumps({{"errors": {{k: str(v) for k, v in bag.import_errors.items()}}, "dags": dags, "calls": calls,
                  "heavy": [m for m in sys.modules if m.split(".")[0] in HEAVY]}}, default=str))
"""


def parse(backend: str, dags_dir: Path = DAGS_DIR, config_dir: Path | None = None, **env: str) -> dict:
    """Parse a DAGs folder in a new interpreter under ``backend``; its DAGs summarised as JSON."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "AIRFLOW_CONN_AWS_DEFAULT"}
    clean.update({"RETRAIN_BACKEND": backend, "AWS_EC2_METADATA_DISABLED": "true", **env})
    if config_dir is not None:
        clean["RETRAIN_CONFIG_DIR"] = str(config_dir)
    code = textwrap.dedent(SUMMARY.format(heavy=HEAVY, dags=str(dags_dir)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def both() -> dict[str, dict]:
    return {backend: parse(backend) for backend in ("local", "aws")}


def test_both_backends_parse_without_errors_heavy_imports_or_network(both):
    for backend, result in both.items():
        assert result["errors"] == {}, backend
        assert result["heavy"] == [], backend
        assert result["calls"] == [], f"{backend} parse opened a connection: {result['calls']}"
        assert {"retrain_intent", "rollback_intent"} <= set(result["dags"]), backend


def test_dags_have_identical_shape_params_retries_and_schedules(both):
    local, aws = both["local"]["dags"], both["aws"]["dags"]
    assert sorted(local) == sorted(aws)
    for dag_id in local:
        for field in ("schedule", "timetable", "start_date", "catchup", "max_active_runs", "params", "native"):
            assert local[dag_id][field] == aws[dag_id][field], (dag_id, field)
        assert sorted(local[dag_id]["tasks"]) == sorted(aws[dag_id]["tasks"]), dag_id
        for task_id, task in local[dag_id]["tasks"].items():
            other = aws[dag_id]["tasks"][task_id]
            # execution_timeout differs for the tasks that wait on an AWS job (test_polling_outlives_each_job)
            waits_on_aws = other["max_attempts"] is not None and task_id not in DEPLOYMENT_STAGE
            for field in (
                "upstream",
                "retries",
                "retry_delay",
                "max_retry_delay",
                *(() if waits_on_aws else ("execution_timeout",)),
                "trigger_rule",
                "max_active_tis_per_dag",
                "assigned_users",
            ):
                assert task[field] == other[field], (dag_id, task_id, field)


@pytest.mark.parametrize(
    ("task_id", "provider_class"),
    [
        ("validate_raw", "airflow.providers.amazon.aws.operators.sagemaker.SageMakerProcessingOperator"),
        ("build_dataset", "airflow.providers.amazon.aws.operators.glue.GlueJobOperator"),
        ("train_model", "airflow.providers.amazon.aws.operators.sagemaker.SageMakerTrainingOperator"),
        ("evaluate_model", "airflow.providers.amazon.aws.operators.sagemaker.SageMakerProcessingOperator"),
    ],
)
def test_aws_job_tasks_are_the_provider_operators(both, task_id, provider_class):
    aws_task = both["aws"]["dags"]["retrain_intent"]["tasks"][task_id]
    local_task = both["local"]["dags"]["retrain_intent"]["tasks"][task_id]
    assert provider_class in aws_task["classes"]
    assert provider_class not in local_task["classes"]
    # The request is built in execute: never rendered, so "5.0" never becomes 5.0.
    assert not {"config", "create_job_kwargs", "script_args", "job_name"} & set(aws_task["templated"])
    assert aws_task["deferrable"] is True


def test_the_aws_deployment_stage_is_the_providers_endpoint_operator_then_deferred_windows(both):
    tasks = both["aws"]["dags"]["retrain_intent"]["tasks"]
    shadow = tasks["deploy_shadow"]
    assert "airflow.providers.amazon.aws.operators.sagemaker.SageMakerEndpointOperator" in shadow["classes"]
    assert shadow["deferrable"] is True
    assert not {"config"} & set(shadow["templated"])  # built in execute, from the run's registered version
    for task_id in ("observe_shadow", "observe_canary"):
        assert "retrain_airflow.aws_deployment.AwsObserveOperator" in tasks[task_id]["classes"]
    assert tasks["promote_model"]["upstream"] == ["observe_canary"]


def test_polling_outlives_each_job(both):
    """An operator polls for the job's whole life and a margin (provisioning, upload): it used to poll for exactly the
    runtime (train_model: 120 polls of 60 s), so a spot job still waiting for capacity or uploading was marked failed
    and the retry started a second job on the same checkpoint prefix."""
    from retrain.aws.requests import POLL_MARGIN_SECONDS

    config = load_config(INTENT)
    training, processing = config.aws.training, config.aws.processing
    tasks = both["aws"]["dags"]["retrain_intent"]["tasks"]
    # check interval 60 s
    assert tasks["train_model"]["max_attempts"] * 60 == (
        training.max_runtime_seconds + training.max_wait_seconds + POLL_MARGIN_SECONDS
    )
    assert tasks["evaluate_model"]["max_attempts"] * 60 == processing.max_runtime_seconds + POLL_MARGIN_SECONDS
    assert tasks["build_dataset"]["max_attempts"] * 60 == config.aws.glue.timeout_minutes * 60 + POLL_MARGIN_SECONDS
    assert POLL_MARGIN_SECONDS >= 600
    for task_id in ("train_model", "evaluate_model", "build_dataset"):  # and the task is not timed out before
        hours, minutes, seconds = (int(part) for part in tasks[task_id]["execution_timeout"].split(":"))
        assert hours * 3600 + minutes * 60 + seconds > tasks[task_id]["max_attempts"] * 60, tasks[task_id]


def test_aws_alerts_go_to_sns_and_local_alerts_to_the_file(both):
    for dag_id in ("retrain_intent", "rollback_intent"):
        for task_id, task in both["aws"]["dags"][dag_id]["tasks"].items():
            assert task["callbacks"] == ["AlertSnsNotifier"], (dag_id, task_id)
            assert both["local"]["dags"][dag_id]["tasks"][task_id]["callbacks"] == ["FileAlertNotifier"]


FAB_IDS_LINE = next(line + "\n" for line in INTENT.read_text().splitlines() if line.startswith("  fab_user_ids:"))


def _config_dir(tmp_path: Path, old: str | None, new: str = "", fab_ids: str = "") -> tuple[Path, Path]:
    from retrain_tools.dagfiles import sync

    text = INTENT.read_text()
    if old is not None:
        assert old in text, old
        text = text.replace(old, new)
    if fab_ids:
        assert FAB_IDS_LINE in text
        text = text.replace(FAB_IDS_LINE, f"  fab_user_ids: {fab_ids}\n")
    config_dir, dags_dir = tmp_path / "config", tmp_path / "dags"
    config_dir.mkdir()
    (config_dir / "intent.yaml").write_text(text)
    sync(config_dir, dags_dir)
    return config_dir, dags_dir


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("role_arn: arn:aws:iam::123456789012:role/retrain-jobs", "role_arn: retrain-jobs", "aws.role_arn"),
        ("  role_arn: arn:aws:iam::123456789012:role/retrain-jobs\n", "", "aws.role_arn"),  # missing
        ("dataset_bucket: retrain-datasets-123456789012", "dataset_bucket: Retrain_Datasets", "aws.dataset_bucket"),
        (
            "instance_type: ml.m5.xlarge\n    instance_count: 1\n    volume_size_gb: 30\n    use_spot",
            "instance_type: m5.xlarge\n    instance_count: 1\n    volume_size_gb: 30\n    use_spot",
            "aws.training.instance_type",
        ),
    ],
)
def test_a_bad_aws_field_is_an_import_error_naming_file_and_field(tmp_path, old, new, field):
    config_dir, dags_dir = _config_dir(tmp_path, old, new)
    result = parse("aws", dags_dir, config_dir)
    error = result["errors"][str(dags_dir / "retrain_intent.py")]
    assert str(config_dir / "intent.yaml") in error and f"field '{field}'" in error, error


def test_no_aws_section_is_an_import_error_only_under_aws(tmp_path):
    text = INTENT.read_text()
    config_dir, dags_dir = _config_dir(tmp_path, text[text.index("aws:  ") :], "")
    result = parse("aws", dags_dir, config_dir)
    error = result["errors"][str(dags_dir / "retrain_intent.py")]
    assert str(config_dir / "intent.yaml") in error and "field 'aws'" in error, error
    assert parse("local", dags_dir, config_dir)["errors"] == {}


def test_under_fab_approvers_are_their_numeric_user_ids(tmp_path):
    config_dir, dags_dir = _config_dir(tmp_path, None, fab_ids="{alice: 7}")
    result = parse("aws", dags_dir, config_dir, AIRFLOW__CORE__AUTH_MANAGER=FAB)
    assert result["errors"] == {}
    assert result["dags"]["retrain_intent"]["tasks"]["await_approval"]["assigned_users"] == [
        {"id": "7", "name": "alice"}
    ]


def test_under_fab_an_approver_without_an_id_is_an_import_error(tmp_path):
    config_dir, dags_dir = _config_dir(tmp_path, FAB_IDS_LINE, "")
    result = parse("aws", dags_dir, config_dir, AIRFLOW__CORE__AUTH_MANAGER=FAB)
    error = result["errors"][str(dags_dir / "retrain_intent.py")]
    assert str(config_dir / "intent.yaml") in error and "field 'approval.fab_user_ids'" in error and "alice" in error, (
        error
    )


# --- the operators' run-time build step ------------------------------------------------------


class FakeTI:
    """The slice of a TaskInstance that run_context reads."""

    def __init__(self, xcoms: dict, try_number: int = 1) -> None:
        self.xcoms, self.try_number = xcoms, try_number

    def xcom_pull(self, task_ids: str):
        return self.xcoms.get(task_ids)


def fake_context(xcoms: dict, try_number: int = 1) -> dict:
    return {
        "ti": FakeTI(xcoms, try_number),
        "dag_run": SimpleNamespace(dag_id="retrain_intent", run_id=RUN_ID),
        "data_interval_start": datetime(2026, 9, 7, tzinfo=UTC),
        "data_interval_end": datetime(2026, 9, 14, tzinfo=UTC),
        "params": {"force": False},
    }


@pytest.fixture
def aws_operators(monkeypatch):
    monkeypatch.setenv("RETRAIN_GIT_SHA", GIT_SHA)
    monkeypatch.setenv("RETRAIN_CODE_DIGEST", CODE_DIGEST)
    monkeypatch.setenv("RETRAIN_GLUE_WHEELS", "pandas-3.1.1-cp311-cp311-manylinux_2_28_x86_64.whl")
    monkeypatch.setenv("RETRAIN_BACKEND", "aws")
    from retrain_airflow import aws_operators

    return aws_operators


def operator(aws_operators, task_id: str):
    from retrain_airflow.factory import UPSTREAM_RESULTS

    return aws_operators.aws_job_operator(load_config(INTENT), task_id, UPSTREAM_RESULTS[task_id], {})


UPSTREAM = {
    "snapshot_raw": {
        "manifest_path": f"s3://retrain-artifacts-123456789012/runs/intent/{RUN_ID.replace(':', '_').replace('+', '_')}"
        "/snapshot_raw/try-1/raw_manifest.json"
    },
    "build_dataset": {"dataset_version": "ds-5f1c0a9e2b7d"},
}


def test_train_model_builds_a_valid_request_per_try(aws_operators):
    from retrain.aws.names import SAGEMAKER_NAME
    from retrain.aws.schema import validate_request

    train = operator(aws_operators, "train_model")
    first, second = (train.build_config(fake_context(UPSTREAM, try_number=n)) for n in (1, 2))
    for request in (first, second):
        validate_request("sagemaker", "CreateTrainingJob", request)
        assert SAGEMAKER_NAME.fullmatch(request["TrainingJobName"]) and len(request["TrainingJobName"]) <= 63
    assert first["TrainingJobName"] != second["TrainingJobName"]
    assert first["HyperParameters"]["base-model"] == "all-MiniLM-L6-v2"  # the aws base model: the config's base_model
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in first["InputDataConfig"]}
    assert channels["code"].endswith(f"/code/{CODE_DIGEST}/sourcedir.tar.gz")  # the toolkit unpacks it from there
    assert first["HyperParameters"]["sagemaker_submit_directory"] == "/opt/ml/input/data/code/sourcedir.tar.gz"
    assert (
        channels["train"] == "s3://retrain-datasets-123456789012/datasets/intent/ds-5f1c0a9e2b7d/train/"
    )  # a prefix: never also train-extra/
    assert first["OutputDataConfig"]["S3OutputPath"].startswith("s3://retrain-artifacts-123456789012/runs/intent/")
    tags = {t["Key"]: t["Value"] for t in first["Tags"]}
    assert tags["retrain:git_sha"] == GIT_SHA


def test_validate_raw_and_build_dataset_build_valid_requests(aws_operators):
    from retrain.aws import glue
    from retrain.aws.schema import validate_request

    validate = operator(aws_operators, "validate_raw").build_config(fake_context(UPSTREAM))
    validate_request("sagemaker", "CreateProcessingJob", validate)
    assert validate["ProcessingJobName"].startswith("intent-validate-raw-")
    kwargs = operator(aws_operators, "build_dataset").build_kwargs(fake_context(UPSTREAM))
    validate_request("glue", "CreateJob", glue.create_job_request(kwargs))
    assert kwargs["create_job_kwargs"]["GlueVersion"] == "5.0" and kwargs["create_job_kwargs"]["WorkerType"] == "G.1X"
    assert kwargs["script_args"]["--result-file"].startswith("s3://retrain-artifacts-123456789012/runs/intent/")


def test_evaluate_model_reads_the_champion_from_the_given_store(aws_operators, tmp_path, monkeypatch):
    from retrain import ledger
    from retrain.aws.schema import validate_request
    from retrain.store import LocalStore

    champion_store = LocalStore(tmp_path / "ledger-store")
    ledger.append(
        champion_store,
        "intent",
        action="promote",
        to_version=3,
        actor="alice",
        reason="first",
        model_dir="s3://retrain-artifacts-123456789012/runs/intent/r/train_model/try-1/model/j/output/model.tar.gz",
        weights_digest="ab" * 32,
    )
    monkeypatch.setattr("retrain.store.get_store", lambda: champion_store)
    upstream = {
        **UPSTREAM,
        "train_model": {
            "model_dir": "s3://retrain-artifacts-123456789012/m.tar.gz",
            "weights_digest": "cd" * 32,
            "mlflow_run_id": "0f3c",
            "dataset_version": "ds-5f1c0a9e2b7d",
        },
    }
    request = operator(aws_operators, "evaluate_model").build_config(fake_context(upstream))
    validate_request("sagemaker", "CreateProcessingJob", request)
    arguments = request["AppSpecification"]["ContainerArguments"]
    assert arguments[arguments.index("--champion-version") + 1] == "3"
    assert request["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"].endswith("/evaluate_model/try-1")


def test_no_deployed_sha_refuses_to_build(aws_operators, monkeypatch):
    monkeypatch.setenv("RETRAIN_GIT_SHA", "abc-dirty")
    with pytest.raises(ValueError, match="RETRAIN_GIT_SHA"):
        operator(aws_operators, "train_model").build_config(fake_context(UPSTREAM))


def test_deferral_settings_come_from_the_environment(aws_operators, monkeypatch):
    from retrain.aws.requests import max_attempts

    assert max_attempts(3600, 60) == 60 and max_attempts(3601, 60) == 61
    monkeypatch.setenv("RETRAIN_AWS_DEFERRABLE", "false")
    monkeypatch.setenv("RETRAIN_AWS_CHECK_INTERVAL", "30")
    train = operator(aws_operators, "train_model")
    assert train.deferrable is False and train.check_interval == 30 and train.max_attempts == (3600 + 7200 + 1800) // 30
    monkeypatch.setenv("RETRAIN_AWS_DEFERRABLE", "maybe")
    with pytest.raises(ValueError, match="RETRAIN_AWS_DEFERRABLE"):
        operator(aws_operators, "train_model")
