"""Gate, approval, promotion and rollback under a real scheduler and API server (after test_pipeline_local)."""

from __future__ import annotations

import json
import time

import pytest

from airflowstack import traffic_during
from dagshape import DEPLOYMENT_STAGE  # tests/ is on pytest's pythonpath
from retrain.jobs import run_key
from retrain.serving import ServingClient

pytestmark = pytest.mark.integration
DAG = "retrain_intent"


def forced_run_awaiting_approval(stack, run_id: str) -> None:
    """A forced re-run of the latest week, stopped at await_approval."""
    start, end = stack["interval"]
    stack["client"].trigger(DAG, run_id, start, end, {"force": True})
    assert stack["client"].wait_for_approval_request(DAG, run_id)


def ledger_text(stack) -> str:
    return (stack["store_root"] / "ledger" / "intent.jsonl").read_text()


def test_reject_keeps_the_champion_and_clears_challenger(stack):
    before = stack["registry_status"]()
    assert before["champion"] == 1  # promoted in test_pipeline_local
    forced_run_awaiting_approval(stack, "reject_check")
    assert stack["registry_status"]()["challenger"] == 2
    stack["as_user"]("alice").respond(
        DAG, "reject_check", "await_approval", "Reject", {"reason": "integration: not convinced"}
    )
    states = stack["client"].wait_for_run(DAG, "reject_check")
    assert states["await_approval"] == "success" and states["promote_model"] == "skipped"
    after = stack["registry_status"]()
    assert (after["champion"], after["challenger"]) == (1, None)
    assert {v["version"]: v["approval"] for v in after["versions"]}[2] == "rejected"
    assert after["ledger"] == before["ledger"]
    decision = json.loads(
        (
            stack["store_root"] / "runs" / "intent" / "reject_check" / "await_approval" / "try-1" / "decision.json"
        ).read_text()
    )
    assert decision["decision"] == "rejected" and decision["responded_by_user"]["id"] == "alice"


def test_second_promotion_then_rollback_restores_the_previous_champion(stack):
    forced_run_awaiting_approval(stack, "approve_check")
    gate = json.loads(
        (
            stack["store_root"] / "runs" / "intent" / "approve_check" / "gate_on_metrics" / "try-1" / "gate.json"
        ).read_text()
    )
    assert gate["has_champion"] is True
    assert {"delta.macro_f1", "significance.macro_f1", "significance.mcnemar", "per_class.regression"} <= {
        c["name"] for c in gate["criteria"]
    }
    # Approved: shadow, then canary, on the model server while traffic replays the raw partitions, then 100%.
    with traffic_during(stack["env"], "intent") as sent:
        stack["as_user"]("alice").respond(DAG, "approve_check", "await_approval", "Approve")
        states = stack["client"].wait_for_run(DAG, "approve_check")
    assert all(states[t] == "success" for t in (*DEPLOYMENT_STAGE, "promote_model")), states
    assert stack["registry_status"]()["champion"] == 3
    assert sent["status"] == {200: sent["sent"]} and {"v1", "v3"} <= set(sent["versions"]), sent
    server = ServingClient(root=stack["store_root"])
    assert (server.endpoint("intent")["primary"], server.endpoint("intent")["canary"]) == (3, None)

    started = time.monotonic()
    run = stack["client"].trigger_manual(
        "rollback_intent", {"reason": "integration: regression in production", "target_version": None}
    )
    states = stack["client"].wait_for_run("rollback_intent", run["dag_run_id"], timeout=120)
    print(
        f"rollback: trigger to success in {time.monotonic() - started:.1f}s"
    )  # a figure for the log; bench/ measures it
    assert states == {"rollback_model": "success"}
    status = stack["registry_status"]()
    assert status["champion"] == 1 and status["ledger_verified"] is True
    assert [(e["action"], e["from_version"], e["to_version"], e["actor"]) for e in status["ledger"]] == [
        ("promote", None, 1, "alice"),
        ("shadow", 1, 3, "alice"),
        ("canary", 1, 3, "alice"),
        ("promote", 1, 3, "alice"),
        ("rollback", 3, 1, "admin"),
    ]
    # The rollback moved the traffic too: every answer now comes from v1.
    assert server.endpoint("intent")["primary"] == 1
    assert {server.invoke("intent", ["I lost my card"])[1]["x-retrain-version"] for _ in range(5)} == {"1"}


@pytest.mark.parametrize("target", [2, 42])
def test_rollback_to_a_version_that_never_served_changes_nothing(stack, target):
    before, ledger_before = stack["registry_status"](), ledger_text(stack)
    run = stack["client"].trigger_manual(
        "rollback_intent", {"reason": "integration: bad target", "target_version": target}
    )
    assert stack["client"].wait_for_run("rollback_intent", run["dag_run_id"], timeout=120) == {
        "rollback_model": "failed"
    }
    assert stack["registry_status"]()["champion"] == before["champion"]
    assert ledger_text(stack) == ledger_before
    log = "".join(
        p.read_text()
        for p in (stack["root"] / "airflow" / "logs").rglob("*.log")
        if run_key(run["dag_run_id"]) in str(p) or run["dag_run_id"] in str(p)
    )
    assert f"v{target} was never champion" in log
    alerts = [json.loads(line) for line in (stack["store_root"] / "alerts" / "intent.jsonl").read_text().splitlines()]
    alert = next(a for a in alerts if a["run_id"] == run["dag_run_id"])  # a failed rollback alerts
    assert alert["dag_id"] == "rollback_intent" and f"v{target} was never champion" in alert["reason"]


def test_rollback_by_a_user_who_may_not_roll_back_changes_nothing(stack):
    """bob may trigger DAG runs, but a rollback is a production change: only rollback users (else approvers)."""
    before, ledger_before = stack["registry_status"](), ledger_text(stack)
    run = stack["as_user"]("bob").trigger_manual("rollback_intent", {"reason": "integration: bob tries"})
    assert stack["client"].wait_for_run("rollback_intent", run["dag_run_id"], timeout=120) == {
        "rollback_model": "failed"
    }
    assert stack["registry_status"]()["champion"] == before["champion"] and ledger_text(stack) == ledger_before
    alerts = [json.loads(line) for line in (stack["store_root"] / "alerts" / "intent.jsonl").read_text().splitlines()]
    assert "bob may not roll back intent" in next(a for a in alerts if a["run_id"] == run["dag_run_id"])["reason"]


def test_gate_rejection_alerts_and_registers_nothing(stack):
    """intent_backfill's floor is out of reach: the run of the latest week (it joins the backfill, last) is rejected at
    the gate, alerts once, registers nothing and is not retried."""
    client, start, dag = stack["client"], stack["interval"][0], "retrain_intent_backfill"
    from retrain_tools.airflow_api import wait_until

    run = wait_until(lambda: client.run_for_interval(dag, start), 600, "the backfill's run of the latest week")
    states = client.wait_for_run(dag, run["dag_run_id"])
    assert states["evaluate_model"] == "success" and states["gate_on_metrics"] == "failed"
    assert {states[t] for t in ("register_model", "await_approval", "promote_model")} == {"upstream_failed"}
    gate = json.loads(
        (
            stack["store_root"]
            / "runs"
            / "intent_backfill"
            / run_key(run["dag_run_id"])
            / "gate_on_metrics"
            / "try-1"
            / "gate.json"
        ).read_text()
    )
    assert gate["decision"] == "reject" and "floor.macro_f1" in gate["failed"]
    alerts = [
        json.loads(line) for line in (stack["store_root"] / "alerts" / "intent_backfill.jsonl").read_text().splitlines()
    ]
    this_run = [a for a in alerts if a["run_id"] == run["dag_run_id"]]
    assert [a["task_id"] for a in this_run] == ["gate_on_metrics"]
    assert stack["registry_status"]("intent_backfill")["versions"] == []
    ti = next(t for t in client.task_instances(dag, run["dag_run_id"]) if t["task_id"] == "gate_on_metrics")
    assert ti["try_number"] == 1  # a rejection is not retried
