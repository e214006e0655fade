"""retrain_intent end to end under CeleryExecutor with two workers: two runs, each approved over REST
hitlDetails and promoted, then a rollback. Real Spark, real training, MLflow on the Postgres server."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from airflowstack import traffic_during
from dagshape import TASKS  # tests/ is on pytest's pythonpath
from retrain.jobs import latest_try, run_key
from retrain_tools.airflow_api import ApiError, wait_until

pytestmark = pytest.mark.celery

DAG = "retrain_intent"


def approve(deployment, run_id: str, reason: str) -> dict[str, str]:
    """Answer the run's approval request as alice once it is parked; return the run's final task states."""
    client, stack = deployment["client"], deployment["stack"]
    assert client.wait_for_approval_request(DAG, run_id), stack.log_tail("scheduler")
    deployment["as_user"]("alice").respond(DAG, run_id, "await_approval", "Approve", {"reason": reason})
    return client.wait_for_run(DAG, run_id)


@pytest.fixture(scope="module")
def promoted(deployment):
    """Run 1 (the previous week, triggered over REST) and run 2 (the latest week, created by the scheduler),
    each approved by alice after bob's answer to run 1 is refused."""
    client, project = deployment["client"], deployment["project"]
    start, _ = project.interval
    first_id = "celery_previous_week"
    # run_after orders the queue: run 1 goes first, the scheduler's run of the latest week waits (max_active_runs=1)
    client.trigger(
        DAG, first_id, start - timedelta(weeks=1), start, {}, logical_date=start - timedelta(weeks=1), run_after=start
    )
    client.set_paused(DAG, False)
    assert client.wait_for_approval_request(DAG, first_id), deployment["stack"].log_tail("scheduler")
    with pytest.raises(ApiError) as refused:
        deployment["as_user"]("bob").respond(DAG, first_id, "await_approval", "Approve")
    while_waiting = deployment["registry_status"]()
    first = approve(deployment, first_id, "celery: first model")
    second_id = wait_until(lambda: client.run_for_interval(DAG, start), 600, "the scheduled run")["dag_run_id"]
    with traffic_during(deployment["env"], "intent"):  # the second run's shadow and canary need requests
        second = approve(deployment, second_id, "celery: second model")
    return {
        "ids": (first_id, second_id),
        "states": (first, second),
        "refused": refused.value,
        "while_waiting": while_waiting,
    }


def test_both_runs_succeed_task_by_task(promoted, deployment):
    stack = deployment["stack"]
    for states in promoted["states"]:
        assert states == {task: "success" for task in TASKS}, (
            stack.log_tail("scheduler") + stack.log_tail("worker1") + stack.log_tail("worker2")
        )
    assert deployment["client"].dag_run(DAG, promoted["ids"][1])["run_type"] == "scheduled"


def test_the_tasks_ran_on_both_workers(promoted, deployment):
    """Consecutive tasks land on different workers: what one task wrote, the next reads in another process."""
    stack = deployment["stack"]
    received = {
        worker: [line for line in stack.tasks_received(worker) if f"dag_id='{DAG}'" in line] for worker in stack.workers
    }
    assert all(received.values()), {worker: len(lines) for worker, lines in received.items()}
    every_line = "\n".join(line for lines in received.values() for line in lines)
    assert all(f"task_id='{task}'" in every_line for task in TASKS)


def test_an_unassigned_user_is_refused_and_nothing_moves(promoted):
    assert promoted["refused"].status == 403 and "not a respondent" in str(promoted["refused"])
    assert (promoted["while_waiting"]["champion"], promoted["while_waiting"]["challenger"]) == (None, 1)


def test_both_promotions_are_in_mlflow_on_postgres_and_in_the_ledger(promoted, deployment):
    status = deployment["registry_status"]()
    assert (status["champion"], status["challenger"], status["ledger_verified"]) == (2, None, True)
    assert [(e["action"], e["from_version"], e["to_version"], e["actor"]) for e in status["ledger"]] == [
        ("promote", None, 1, "alice"),
        ("shadow", 1, 2, "alice"),
        ("canary", 1, 2, "alice"),
        ("promote", 1, 2, "alice"),
    ]
    assert [v["airflow_run_id"] for v in status["versions"]] == list(promoted["ids"])
    run_dir = deployment["store_root"] / "runs" / "intent" / run_key(promoted["ids"][1])
    gate = json.loads((latest_try(run_dir / "gate_on_metrics") / "gate.json").read_text())
    assert (
        gate["has_champion"] is True and int(gate["champion_version"]) == 1
    )  # run 2 faced run 1's model under the full gate
    trained = json.loads((latest_try(run_dir / "train_model") / "model" / "training_summary.json").read_text())
    with mlflow_db(deployment) as cursor:
        cursor.execute("select key, value from tags where run_uuid = %s", (trained["mlflow_run_id"],))
        tags = dict(cursor.fetchall())
        cursor.execute("select name, version from model_versions order by version")
        versions = cursor.fetchall()
    assert tags["airflow_run_id"] == promoted["ids"][1] and tags["dataset_version"] == trained["dataset_version"]
    assert versions == [("intent", 1), ("intent", 2)]
    assert not list(deployment["store_root"].rglob("*.db")), (
        "a SQLite file appeared in the store: MLflow must use Postgres here"
    )


def test_nothing_depends_on_the_processes_working_directory(promoted, deployment):
    """Every Airflow process runs in a directory of its own; nothing may be written there (relative paths)."""
    assert sorted(p.name for p in deployment["stack"].cwd.iterdir()) == []


def test_rollback_restores_the_previous_champion(promoted, deployment):
    client = deployment["client"]
    run = client.trigger_manual(
        "rollback_intent", {"reason": "celery: regression in production", "target_version": None}
    )
    assert client.wait_for_run("rollback_intent", run["dag_run_id"], timeout=180) == {"rollback_model": "success"}
    status = deployment["registry_status"]()
    assert (status["champion"], status["ledger_verified"]) == (1, True)
    assert [(e["action"], e["from_version"], e["to_version"], e["actor"]) for e in status["ledger"]][-1] == (
        "rollback",
        2,
        1,
        "admin",
    )
    assert deployment["server"].endpoint("intent")["primary"] == 1  # the rollback moved the traffic as well


class mlflow_db:
    """A cursor on the deployment's MLflow database (Postgres)."""

    def __init__(self, deployment) -> None:
        self.port = deployment["stack"].postgres.port

    def __enter__(self):
        import psycopg2

        self.conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="airflow", dbname="mlflow")
        return self.conn.cursor()

    def __exit__(self, *exc) -> None:
        self.conn.close()
