"""The deployment stage under the real scheduler and triggerer, on the project's model server: a challenger whose
canary fails every request is rolled back automatically, the champion serving 100% and its alias unmoved.

``intent_faulty`` is ``intent`` with ``deployment.test_faults: {canary: {error_rate: 1.0}}`` in its (tiny) config
(tests/airflowstack.py, FAULTY_CANARY): the injection is the config's, and no shipped config sets it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflowstack import traffic_during
from retrain.serving import ServingClient
from retrain_tools.airflow_api import wait_until

pytestmark = pytest.mark.integration
DAG, MODEL = "retrain_intent_faulty", "intent_faulty"


def test_a_first_version_passes_the_stage_through_and_serves_at_100_percent(stack):
    client, start = stack["client"], stack["interval"][0]
    run = wait_until(lambda: client.run_for_interval(DAG, start), 600, "the scheduled run of intent_faulty")
    assert client.wait_for_approval_request(DAG, run["dag_run_id"]), Path(stack["log"]).read_text()[-3000:]
    stack["as_user"]("alice").respond(DAG, run["dag_run_id"], "await_approval", "Approve", {"reason": "first"})
    states = client.wait_for_run(DAG, run["dag_run_id"])
    assert {t: states[t] for t in ("deploy_shadow", "observe_canary", "promote_model")} == dict.fromkeys(
        ("deploy_shadow", "observe_canary", "promote_model"), "success"
    ), states
    served = ServingClient(root=stack["store_root"]).endpoint(MODEL)
    assert (served["primary"], served["canary"], served["shadow"]) == (1, None, None)


def test_a_canary_that_fails_is_rolled_back_automatically(stack):
    client, (start, end) = stack["client"], stack["interval"]
    client.trigger(DAG, "faulty_canary", start, end, {"force": True})
    assert client.wait_for_approval_request(DAG, "faulty_canary")
    with traffic_during(stack["env"], MODEL) as sent:
        stack["as_user"]("alice").respond(DAG, "faulty_canary", "await_approval", "Approve", {"reason": "canary"})
        states = client.wait_for_run(DAG, "faulty_canary")
    assert (states["observe_shadow"], states["start_canary"], states["observe_canary"]) == (
        "success",
        "success",
        "failed",
    ), states
    assert states["promote_model"] == "upstream_failed"
    # The champion serves 100%, its alias never moved.
    served = ServingClient(root=stack["store_root"]).endpoint(MODEL)
    assert (served["primary"], served["canary"], served["shadow"]) == (1, None, None)
    status = stack["registry_status"](MODEL)
    assert (status["champion"], status["ledger_verified"]) == (1, True)
    assert [(e["action"], e["from_version"], e["to_version"]) for e in status["ledger"]] == [
        ("promote", None, 1),
        ("shadow", 1, 2),
        ("canary", 1, 2),
        ("auto_rollback", 1, 2),
    ]
    rollback = status["ledger"][-1]
    assert rollback["actor"] == "retrain (automatic)" and rollback["figures"]["error_rate"] == 1.0
    assert "rolled back automatically" in rollback["reason"] and "error rate 100.0% > 5.0%" in rollback["reason"]
    assert status["ledger"][2]["figures"]["agreement"] == 1.0  # same data, same seed: the shadow agreed throughout
    # The alert says why; the traffic saw the canary's errors, and only the canary's.
    alerts = [json.loads(line) for line in (stack["store_root"] / "alerts" / f"{MODEL}.jsonl").read_text().splitlines()]
    alert = next(a for a in alerts if a["run_id"] == "faulty_canary")
    assert alert["task_id"] == "observe_canary" and "rolled back automatically" in alert["reason"]
    assert sent["status"].get(500, 0) >= 10 and set(sent["versions"]) <= {"v1", "v2"}
    assert sent["versions"].get("v2", 0) >= 10
