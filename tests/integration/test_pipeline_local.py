"""retrain_intent end to end under a real scheduler: real Spark, real training, MLflow on SQLite."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from airflowstack import run_report  # tests/ is on pythonpath
from dagshape import TASKS  # tests/ is on pytest's pythonpath
from retrain.jobs import run_key
from retrain_tools.airflow_api import ApiError, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scheduled_run(stack):
    """Unpause: the scheduler creates the run of the latest complete week. At the approval step an
    unassigned user answers first (refused), then the assigned approver approves."""
    client, start = stack["client"], stack["interval"][0]
    client.set_paused("retrain_intent", False)
    run = wait_until(lambda: client.run_for_interval("retrain_intent", start), 600, "the scheduled run")
    run_id = run["dag_run_id"]
    # The run started with the stack, beside every other model's (conftest.start_runs): it shares the machine with them.
    assert client.wait_for_approval_request("retrain_intent", run_id, timeout=1800), Path(stack["log"]).read_text()[
        -3000:
    ] + run_report(client, "retrain_intent", run_id)
    with pytest.raises(ApiError) as refused:
        stack["as_user"]("bob").respond("retrain_intent", run_id, "await_approval", "Approve")
    while_waiting = stack["registry_status"]()
    stack["as_user"]("alice").respond(
        "retrain_intent", run_id, "await_approval", "Approve", {"reason": "integration: first model"}
    )
    return {
        "run": run,
        "states": client.wait_for_run("retrain_intent", run_id),
        "refused": refused.value,
        "while_waiting": while_waiting,
    }


def test_scheduler_runs_every_task(scheduled_run, stack):
    assert scheduled_run["states"] == {task: "success" for task in TASKS}, Path(stack["log"]).read_text()[-5000:]
    assert scheduled_run["run"]["run_type"] == "scheduled"
    start, end = stack["interval"]
    assert end - start == timedelta(days=7)


def test_unassigned_user_is_refused_and_nothing_moves(scheduled_run):
    assert scheduled_run["refused"].status == 403 and "not a respondent" in str(scheduled_run["refused"])
    assert scheduled_run["while_waiting"]["champion"] is None
    assert scheduled_run["while_waiting"]["challenger"] == 1


def test_assigned_approval_promotes_with_the_approver_in_the_ledger(scheduled_run, stack):
    status = stack["registry_status"]()
    assert (status["champion"], status["challenger"]) == (1, None)
    entry = status["ledger"][0]
    assert (entry["action"], entry["to_version"], entry["actor"], entry["reason"]) == (
        "promote",
        1,
        "alice",
        "integration: first model",
    )
    run_dir = stack["store_root"] / "runs" / "intent" / run_key(scheduled_run["run"]["dag_run_id"])
    gate = json.loads((run_dir / "gate_on_metrics" / "try-1" / "gate.json").read_text())
    assert entry["gate_digest"] == gate["digest"] and gate["has_champion"] is False
    version = status["versions"][0]
    assert version["airflow_run_id"] == scheduled_run["run"]["dag_run_id"] and version["approval"] == "approved"


def test_artifacts_have_lineage(scheduled_run, stack):
    run = scheduled_run["run"]
    store = stack["store_root"]
    run_dir = store / "runs" / "intent" / run_key(run["dag_run_id"])
    built = json.loads((run_dir / "build_dataset" / "try-1" / "result.json").read_text())
    counts = built["counts"]
    assert counts["raw_rows"] - counts["after_normalized_dedupe"] >= 2  # planted exact + normalised dupes
    assert counts["contaminated_removed"] >= 1  # planted golden overlap
    version_dir = store / "datasets" / "intent" / built["dataset_version"]
    manifest = json.loads((version_dir / "manifest.json").read_text())
    assert manifest["lineage"]["golden_version"] == "v1"
    trained = json.loads((run_dir / "train_model" / "try-1" / "model" / "training_summary.json").read_text())
    assert trained["dataset_version"] == built["dataset_version"]
    metrics = json.loads((run_dir / "evaluate_model" / "try-1" / "metrics.json").read_text())
    assert metrics["challenger"]["macro_f1"] > 0.5  # 5 intents: chance is 0.2
    assert metrics["champion"] is None
    assert "<img" in (run_dir / "evaluate_model" / "try-1" / "report.html").read_text()
    gated = (
        run_dir / "gate_on_metrics" / "try-1" / "report.html"
    ).read_text()  # what a person reads: the verdict first
    assert gated.index("Gate: PASS") < gated.index("<h2>Summary</h2>")
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
    stack["write_csv"](
        stack["store_root"] / f"raw/intent/dt={end.date()}/part-00000.csv",
        [("where is my card", "card_arrival"), ("what is this fee", "mystery_label")],
    )
    client.trigger("retrain_intent", "bad_data_check", end, end + timedelta(weeks=1))
    states = client.wait_for_run("retrain_intent", "bad_data_check")
    assert states["validate_raw"] == "failed"
    assert all(states[t] == "upstream_failed" for t in TASKS[2:])
    report = next(
        (stack["store_root"] / "runs" / "intent" / "bad_data_check" / "validate_raw").rglob("validation_report.json")
    )
    assert "mystery_label" in report.read_text()
    assert sorted(p.name for p in (stack["store_root"] / "datasets" / "intent").iterdir()) == existing
    alerts = [json.loads(line) for line in (stack["store_root"] / "alerts" / "intent.jsonl").read_text().splitlines()]
    alert = next(a for a in alerts if a["run_id"] == "bad_data_check")  # the failure alerted, with link and reason
    assert alert["task_id"] == "validate_raw" and "mystery_label" in alert["reason"]
    assert alert["url"].endswith("/dags/retrain_intent/runs/bad_data_check/tasks/validate_raw?try_number=1")
