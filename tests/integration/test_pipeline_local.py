"""retrain_intent end to end under a real scheduler: real Spark, real training, MLflow on SQLite."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import timedelta

import pytest

pytestmark = pytest.mark.integration

TASKS = ["snapshot_raw", "validate_raw", "build_dataset", "check_drift", "train_model", "evaluate_model"]


def wait_for_run(client, run_id: str, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.dag_run("retrain_intent", run_id)
        if run["state"] in ("success", "failed"):
            return {ti["task_id"]: ti["state"] for ti in client.task_instances("retrain_intent", run_id)}
        time.sleep(3)
    raise TimeoutError(f"run {run_id} still running after {timeout}s")


@pytest.fixture(scope="module")
def scheduled_run(stack):
    """Unpause: the scheduler itself creates the run of the latest complete week."""
    client = stack["client"]
    start, _ = stack["interval"]
    client.set_paused("retrain_intent", False)
    deadline = time.monotonic() + 120
    while (run := client.run_for_interval("retrain_intent", start)) is None:
        assert time.monotonic() < deadline, "the scheduler created no run"
        time.sleep(2)
    return run, wait_for_run(client, run["dag_run_id"])


def test_scheduler_runs_every_task(scheduled_run, stack):
    run, states = scheduled_run
    assert states == {task: "success" for task in TASKS}, open(stack["log"]).read()[-5000:]
    assert run["run_type"] == "scheduled"
    start, end = stack["interval"]
    assert end - start == timedelta(days=7)


def test_artifacts_have_lineage(scheduled_run, stack):
    run, _ = scheduled_run
    store = stack["store_root"]
    run_dir = next((store / "runs" / "intent").iterdir())
    built = json.loads((run_dir / "build_dataset" / "result.json").read_text())
    counts = built["counts"]
    assert counts["raw_rows"] - counts["after_normalized_dedupe"] >= 2  # planted exact + normalised dupes
    assert counts["contaminated_removed"] >= 1  # planted golden overlap
    version_dir = store / "datasets" / "intent" / built["dataset_version"]
    manifest = json.loads((version_dir / "manifest.json").read_text())
    assert manifest["lineage"]["golden_version"] == "v1"
    trained = json.loads((run_dir / "train_model" / "model" / "training_summary.json").read_text())
    assert trained["dataset_version"] == built["dataset_version"]
    metrics = json.loads((run_dir / "evaluate_model" / "metrics.json").read_text())
    assert metrics["challenger"]["macro_f1"] > 0.5  # 5 intents: chance is 0.2
    assert metrics["champion"] is None
    assert "<img" in (run_dir / "evaluate_model" / "report.html").read_text()
    db = sqlite3.connect(store / "mlflow.db")
    tags = dict(db.execute("select key, value from tags where run_uuid=?", (trained["mlflow_run_id"],)))
    assert tags["airflow_run_id"] == run["dag_run_id"]
    assert tags["dataset_version"] == built["dataset_version"]
    assert tags["golden_version"] == "v1" and len(tags["config_digest"]) == 64


def test_job_output_is_streamed_into_the_task_log(scheduled_run, stack):
    logs = list((stack["root"] / "airflow" / "logs").rglob("*.log"))
    train_logs = [p for p in logs if "train_model" in str(p)]
    assert train_logs, "no train_model task log"
    text = "".join(p.read_text(errors="replace") for p in train_logs)
    assert "[train_model]" in text and "weights_digest=" in text


def test_bad_data_stops_the_run_before_the_dataset_is_built(scheduled_run, stack):
    """A partition with an unknown label in the next week: validate_raw fails, nothing downstream runs."""
    client = stack["client"]
    _, end = stack["interval"]
    existing = sorted(p.name for p in (stack["store_root"] / "datasets" / "intent").iterdir())
    stack["write_csv"](stack["store_root"] / f"raw/intent/dt={end.date()}/part-00000.csv",
              [("where is my card", "card_arrival"), ("what is this fee", "mystery_label")])
    client.trigger("retrain_intent", "bad_data_check", end, end + timedelta(weeks=1))
    states = wait_for_run(client, "bad_data_check")
    assert states["validate_raw"] == "failed"
    assert all(states[t] == "upstream_failed" for t in TASKS[2:])
    report = next((stack["store_root"] / "runs" / "intent" / "bad_data_check" / "validate_raw").glob("validation_report.json"))
    assert "mystery_label" in report.read_text()
    assert sorted(p.name for p in (stack["store_root"] / "datasets" / "intent").iterdir()) == existing
