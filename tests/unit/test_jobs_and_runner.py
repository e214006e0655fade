"""Job specs and the local runner's container contract, without running a job."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

import pytest

from retrain.config import load_model
from retrain.jobs import RunContext, build_dataset_spec, evaluate_model_spec, train_model_spec
from retrain.runner import JobFailed, command_line, job_environment, run_job

CTX = RunContext(
    dag_id="retrain_intent",
    run_id="scheduled__2026-09-14T00:00:00+00:00",
    interval_start=datetime(2026, 9, 14, tzinfo=timezone.utc),
    interval_end=datetime(2026, 9, 21, tzinfo=timezone.utc),
    upstream={
        "snapshot_raw": {"manifest_path": "/m.json"},
        "build_dataset": {"dataset_version": "ds-abc", "drift": {"score": 0.5}},
        "train_model": {"model_dir": "/model", "mlflow_run_id": "r1"},
    },
)


def test_run_key_is_path_safe():
    assert CTX.run_key == "scheduled__2026-09-14T00_00_00_00_00"


def test_training_spec_follows_script_mode(store):
    spec = train_model_spec(load_model("intent"), CTX, store)
    env = job_environment(spec)
    assert env["SM_CHANNEL_TRAIN"].endswith("datasets/intent/ds-abc/train")
    assert env["SM_CHANNEL_VALIDATION"].endswith("datasets/intent/ds-abc/validation")
    assert env["SM_MODEL_DIR"] == str(spec.model_dir) and env["SM_CHECKPOINT_DIR"] == str(spec.checkpoint_dir)
    assert json.loads(env["SM_HPS"])["seed"] == "42"
    cmd = command_line(spec)
    assert cmd[cmd.index("--dataset-version") + 1] == "ds-abc"
    assert cmd[cmd.index("--learning-rate") + 1] == "0.0001"
    lineage = json.loads(env["RETRAIN_LINEAGE"])
    assert set(lineage) >= {"dataset_version", "golden_version", "base_model", "git_sha", "config_digest", "airflow_dag_id", "airflow_run_id"}
    assert lineage["airflow_run_id"] == CTX.run_id
    assert not any(key.startswith("AIRFLOW") for key in env)  # jobs know nothing about Airflow


def test_evaluation_and_etl_specs(store):
    config = load_model("intent")
    evaluate = evaluate_model_spec(config, CTX, store)
    assert evaluate.arguments["golden-dir"].endswith("golden/intent/v1")
    assert "champion-dir" not in evaluate.arguments  # no ledger, no champion
    build = build_dataset_spec(config, CTX, store)
    assert build.kind == "glue" and build.arguments["raw-manifest"] == "/m.json"


def test_runner_streams_output_and_reports_failures(store, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="retrain.runner")
    script = tmp_path / "job.py"
    script.write_text("import sys, json, os\nprint('hello from the job')\nsys.exit(int(os.environ.get('CODE', '0')))\n")
    monkeypatch.setenv("RETRAIN_JOB_PYTHON", sys.executable)
    from retrain.jobs import JobSpec

    spec = JobSpec(name="probe", kind="processing", script=script, arguments={}, result_file=tmp_path / "out" / "result.json", env={"CODE": "3"})
    with pytest.raises(JobFailed, match=r"probe exited with code 3.*\n.*hello from the job"):
        run_job(spec)
    assert "hello from the job" in caplog.text
    ok = JobSpec(name="probe", kind="processing", script=script, arguments={}, result_file=tmp_path / "out" / "result.json")
    with pytest.raises(JobFailed, match="wrote no result file"):
        run_job(ok)
