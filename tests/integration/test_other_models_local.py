"""Shipped models other than intent end to end under the real scheduler, on tiny data: embedding_adapter
(monthly) and the reranker (monthly), two other task types, and sentiment (weekly from Tuesday), a
text_classification model with an escalation metric. The scheduler creates the run of the latest complete
interval of the model's own cadence, every task runs, the assigned approver approves over REST hitlDetails,
and the promoted version serves through MLflow with its task type's loader. llm_lora (causal_lm_lora,
quarterly) runs under no scheduler in the tests (on tiny data its run would cost minutes): its jobs run on
tiny data in tests/jobs/test_llm_lora.py, its DAG is checked in tests/dags, and bench/model_demos.py runs
its demo (two runs under ``airflow standalone``)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from airflowstack import run_report  # tests/ is on pythonpath
from dagshape import TASKS  # tests/ is on pytest's pythonpath
from jobscripts import JOBSIDE
from retrain.config import load_config
from retrain.jobs import run_key
from retrain.paths import INCLUDE_DIR, PROJECT_ROOT, job_python
from retrain.tasks import TASK_TYPES
from retrain_tools.airflow_api import wait_until

pytestmark = pytest.mark.integration

QUERY = "I still have not received my new card"
CANDIDATES = [
    {"passage_id": "p_card_arrival", "text": "card_arrival: When will my new card arrive?", "score": 0.31},
    {"passage_id": "p_exchange_rate", "text": "exchange_rate: What exchange rate do you use?", "score": 0.35},
]
REQUESTS = {
    "embedding_adapter": {"text": [QUERY]},
    "reranker": [{"query": QUERY, "candidates": CANDIDATES}],
    "sentiment": {"text": ["The battery died after two days and support never answered."]},
}
"""One serving request per model, as the DataFrame a caller hands mlflow.pyfunc: a text column, or one row per
request."""
INTERVAL_DAYS = {"weekly": {7}, "monthly": {28, 29, 30, 31}}
"""How long the scheduler's data interval of each cadence is: a monthly model's is the whole calendar month."""


def check_served(model: str, answer: list) -> None:
    """What each task type's served model answers for REQUESTS[model]."""
    (one,) = answer
    if model == "embedding_adapter":
        assert len(one) == 384 and abs(sum(v * v for v in one) - 1.0) < 1e-4  # an L2-normalised MiniLM-sized embedding
    elif model == "sentiment":  # a label name of its labels file
        assert one in {"negative", "positive"}, answer
    else:  # the reranker: both candidates, reordered by its served score, best first
        assert sorted(one["passage_ids"]) == sorted(c["passage_id"] for c in CANDIDATES)
        assert one["scores"] == sorted(one["scores"], reverse=True) and len(one["scores"]) == len(CANDIDATES)


@pytest.fixture(scope="module", params=["embedding_adapter", "reranker", "sentiment"])  # conftest.OTHER_MODELS
def promoted(request, stack):
    model = request.param
    client, dag_id = stack["client"], f"retrain_{model}"
    start, end = stack["other_models"][model]["interval"]
    client.set_paused(dag_id, False)
    run = wait_until(lambda: client.run_for_interval(dag_id, start), 600, f"the scheduled run of {dag_id}")
    run_id = run["dag_run_id"]
    assert client.wait_for_approval_request(dag_id, run_id), Path(stack["log"]).read_text()[-3000:] + run_report(
        client, dag_id, run_id
    )
    stack["as_user"]("alice").respond(
        dag_id, run_id, "await_approval", "Approve", {"reason": f"integration: first {model}"}
    )
    states = client.wait_for_run(dag_id, run_id)
    client.set_paused(dag_id, True)
    return {
        "model": model,
        "run": run,
        "states": states,
        "interval": (start, end),
        "run_dir": stack["store_root"] / "runs" / model / run_key(run_id),
        "report": run_report(client, dag_id, run_id),
    }


def test_the_scheduler_runs_every_task_of_the_cadences_interval(promoted, stack):
    assert promoted["states"] == dict.fromkeys(TASKS, "success"), promoted["report"]
    assert promoted["run"]["run_type"] == "scheduled"
    start, end = promoted["interval"]
    cadence = load_config(stack["config_dir"] / f"{promoted['model']}.yaml").schedule.cadence
    assert (end - start).days in INTERVAL_DAYS[cadence], (cadence, start, end)


def test_metrics_gate_and_registry_are_the_task_types(promoted, stack):
    model, run_dir = promoted["model"], promoted["run_dir"]
    config = load_config(stack["config_dir"] / f"{model}.yaml")
    task = json.loads((run_dir / "evaluate_model" / "try-1" / "metrics.json").read_text())
    assert task["task"] == config.task and task["champion"] is None
    if config.task != "text_classification":  # the retrieval-shaped tasks score a baseline in the same run
        assert task["baseline"]
    gate = json.loads((run_dir / "gate_on_metrics" / "try-1" / "gate.json").read_text())
    floors = config.gate.floors
    assert (
        gate["decision"] == "pass"
        and floors
        and {f"floor.{m}" for m in floors} <= {c["name"] for c in gate["criteria"]}
    )
    if config.gate.false_escalation:  # sentiment's escalation metric is judged, not only reported
        assert "false_escalation.rate" in {c["name"] for c in gate["criteria"] if c["verdict"] == "pass"}, gate[
            "criteria"
        ]
    status = stack["registry_status"](model)
    assert (status["champion"], status["challenger"]) == (1, None) and status["ledger"][0]["actor"] == "alice"
    tags = dict(
        sqlite3.connect(stack["store_root"] / "mlflow.db").execute(
            "select key, value from model_version_tags where name=? and version=1", (model,)
        )
    )
    assert tags["task"] == config.task and {f"golden_{m}" for m in TASK_TYPES[config.task]} <= set(tags)


def test_the_champion_serves_through_its_task_types_loader(promoted, stack):
    env = {**stack["env"], "PYTHONPATH": f"{INCLUDE_DIR}:{PROJECT_ROOT / 'plugins'}"}
    model = promoted["model"]
    proc = subprocess.run(
        [str(job_python()), str(JOBSIDE / "serve_champion.py"), model, json.dumps(REQUESTS[model])],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_served(model, json.loads(proc.stdout.strip().splitlines()[-1]))
