"""Operating the project under a real scheduler: broken configs are visible, backfills respect the
machine, and failures alert through the model's notifier."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from retrain_tools.airflow_api import wait_until

pytestmark = pytest.mark.integration


def test_a_broken_config_is_an_import_error_and_the_other_dags_load(stack):
    client = stack["client"]
    errors = wait_until(
        lambda: [e for e in client.import_errors() if e["filename"].endswith("retrain_broken.py")],
        120,
        "the import error",
    )
    trace = errors[0]["stack_trace"]
    assert str(stack["config_dir"] / "broken.yaml") in trace and "field 'schedule.cadence'" in trace
    assert client.dag("retrain_broken") is None
    for model in ("intent", "intent_backfill", "intent_race"):
        assert client.dag(f"retrain_{model}") is not None and client.dag(f"rollback_{model}") is not None
    cli = subprocess.run(
        ["airflow", "dags", "list-import-errors", "--output", "json"],
        env=stack["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    listed = json.loads(
        next(line for line in reversed(cli.stdout.splitlines()) if line.startswith("["))
    )  # after any warnings
    assert [e for e in listed if "retrain_broken.py" in e["filepath"] and "schedule.cadence" in e["error"]], (
        cli.stdout + cli.stderr
    )


def test_a_backfill_runs_alone_in_order_and_never_trains_twice_at_once(stack):
    """A backfill's own max_active_runs is 10 by default; the job tasks' max_active_tis_per_dag=1 keeps
    training jobs one at a time on the 2-core machine. Unpausing the DAG would start the scheduler's run of the latest
    week at once, beside the backfill, drifting against a version older than the backfill builds: by default that
    week joins the backfill instead, last, and no scheduled run is created."""
    client, start = stack["client"], stack["interval"][0]
    dag = "retrain_intent_backfill"
    # The documented command, run when the stack came up (conftest.start_runs), beside a running scheduler on SQLite: it
    # goes through the API server, unpauses the DAG (a paused DAG's backfill runs stay queued), and here allows 10 runs
    # at once, a backfill's own default.
    cli = stack["started"]["backfill_cli"]
    assert cli.returncode == 0 and "unpausing it" in cli.stdout, cli.stdout + cli.stderr  # paused at creation

    def finished():  # the weeks asked for and the latest week, whatever created their runs
        runs = client.dag_runs(dag)
        done = all(r["state"] in ("success", "failed") for r in runs)
        return runs if done and len(runs) >= len(stack["backfill_weeks"]) + 1 else None

    runs = wait_until(finished, 900, "the backfill's runs", every=5)
    assert sorted((r["run_type"], r["data_interval_start"][:10]) for r in runs) == [
        ("backfill", str((start - timedelta(weeks=k)).date())) for k in (*stack["backfill_weeks"], 0)
    ], "a run other than the backfill's ran beside it"
    assert f"scheduled run of {start.date()} is due: it joins the backfill" in cli.stdout, cli.stdout
    trainings = []
    for run in runs:
        ti = next(t for t in client.task_instances(dag, run["dag_run_id"]) if t["task_id"] == "train_model")
        assert ti["state"] == "success", ti
        trainings.append((ti["start_date"], ti["end_date"], run["data_interval_start"]))
    trainings.sort()
    for (_, end_a, week_a), (start_b, _, week_b) in pairwise(trainings):
        assert end_a <= start_b, f"train_model of the weeks of {week_a} and {week_b} overlapped"
    alerts = (stack["store_root"] / "alerts" / "intent_backfill.jsonl").read_text().splitlines()
    assert {json.loads(a)["run_id"] for a in alerts} >= {r["dag_run_id"] for r in runs}  # each gate rejection alerted


def test_two_overlapping_runs_gated_without_a_champion_cannot_both_be_promoted(stack):
    """The race: a backfill run and the scheduler's run overlap (a backfill has its own max_active_runs),
    both are gated with no champion and both approved. The first is promoted; the second's gate never saw
    that champion, so its deployment is refused before any traffic moves, and the champion stays."""
    client = stack["client"]
    dag = "retrain_intent_race"

    # Started with the stack (conftest.start_runs): unpaused, so the scheduler created the run of the latest week, and a
    # backfill of the week before with max_active_runs=2.
    def both_runs():
        runs = client.dag_runs(dag)
        return runs if len(runs) == 2 else None

    runs = wait_until(both_runs, 600, "two overlapping runs")
    waiting = []
    for run in runs:
        assert client.wait_for_approval_request(dag, run["dag_run_id"]), Path(stack["log"]).read_text()[-3000:]
        waiting.append(run["dag_run_id"])
    alice = stack["as_user"]("alice")
    first, second = waiting
    alice.respond(dag, first, "await_approval", "Approve", {"reason": "race: first"})
    assert client.wait_for_run(dag, first)["promote_model"] == "success"
    alice.respond(dag, second, "await_approval", "Approve", {"reason": "race: second"})
    states = client.wait_for_run(dag, second)
    # Refused before any traffic moves: the deployment stage's first task makes promote_model's check.
    assert (states["deploy_shadow"], states["promote_model"]) == ("failed", "upstream_failed")
    status = stack["registry_status"]("intent_race")
    assert len(status["ledger"]) == 1 and status["champion"] == status["ledger"][0]["to_version"]
    alerts = [
        json.loads(line) for line in (stack["store_root"] / "alerts" / "intent_race.jsonl").read_text().splitlines()
    ]
    reason = next(a for a in alerts if a["run_id"] == second and a["task_id"] == "deploy_shadow")["reason"]
    assert "was gated against no champion, but the champion is now" in reason and "Clear evaluate_model" in reason


def test_an_approval_nobody_answers_times_out_as_a_rejection_and_alerts(stack):
    """Nobody answers within response_timeout_hours: a rejection, the champion untouched, and an alert."""
    client, start = stack["client"], stack["interval"][0]
    dag = "retrain_intent_timeout"
    client.set_paused(dag, False)
    run = wait_until(lambda: client.run_for_interval(dag, start), 600, "the scheduled run")
    states = client.wait_for_run(dag, run["dag_run_id"])
    assert states["await_approval"] == "success" and states["promote_model"] == "skipped", states
    decision = json.loads(next((stack["store_root"] / "runs" / "intent_timeout").rglob("decision.json")).read_text())
    assert decision["decision"] == "rejected" and decision["timed_out"] is True
    status = stack["registry_status"]("intent_timeout")
    assert status["champion"] is None and status["versions"][0]["approval"] == "rejected"
    alerts = [
        json.loads(line) for line in (stack["store_root"] / "alerts" / "intent_timeout.jsonl").read_text().splitlines()
    ]
    alert = next(a for a in alerts if a["run_id"] == run["dag_run_id"])
    assert (
        alert["task_id"] == "await_approval"
        and "timed out" in alert["message"]
        and "counts as a rejection" in alert["reason"]
    )
    assert alert["url"].startswith("http") and "/tasks/await_approval" in alert["url"]
