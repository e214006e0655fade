"""Alert links point where this Airflow runs, by Airflow's own config, on the local and the aws backend alike."""

from __future__ import annotations

import json

import pytest
from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

RUN_ID = "scheduled__2026-10-05T00:00:00+00:00"
TASK_PAGE = "/dags/retrain_intent/runs/scheduled__2026-10-05T00%3A00%3A00%2B00%3A00/tasks/train_model?try_number=2"


class TaskInstance:
    """What an alert reads of a failed task instance, with Airflow's own ``log_url`` (what alerts linked to before)."""

    log_url = RuntimeTaskInstance.log_url

    def __init__(self) -> None:
        self.dag_id, self.run_id, self.task_id, self.try_number, self.map_index = (
            "retrain_intent",
            RUN_ID,
            "train_model",
            2,
            -1,
        )


@pytest.fixture
def context():
    return {"ti": TaskInstance(), "exception": RuntimeError("CUDA out of memory")}


@pytest.fixture
def airflow_on_8093(monkeypatch):
    """Airflow's API server configured on port 8093, as the demo with --port 8093 leaves it (no base_url)."""
    monkeypatch.setenv("AIRFLOW__API__PORT", "8093")
    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)


def test_the_local_alert_links_to_the_task_on_airflows_port(airflow_on_8093, context):
    from retrain.store import LocalStore
    from retrain_airflow.notifiers import FileAlertNotifier

    assert context["ti"].log_url.startswith("http://localhost:8080/")  # Airflow's own link ignores [api] port
    alert = FileAlertNotifier(model_name="intent").notify(context)
    assert alert["url"] == f"http://localhost:8093{TASK_PAGE}"
    written = LocalStore().path("alerts/intent.jsonl").read_text().splitlines()[-1]
    assert json.loads(written)["url"] == alert["url"]


def test_the_sns_alert_links_to_the_task_on_airflows_port(airflow_on_8093, context):
    from retrain_airflow.aws_notifiers import AlertSnsNotifier

    published = []
    notifier = AlertSnsNotifier(
        model_name="intent", topic_arn="arn:aws:sns:us-east-1:123456789012:retrain-alerts", region_name="us-east-1"
    )
    notifier.hook = type("Hook", (), {"publish_to_target": lambda self, **kwargs: published.append(kwargs)})()
    alert = notifier.notify(context)
    assert alert["url"] == f"http://localhost:8093{TASK_PAGE}"
    assert f"link: http://localhost:8093{TASK_PAGE}\n" in published[0]["message"]


def test_both_backends_use_one_helper_that_follows_the_clis_rule(airflow_on_8093, monkeypatch):
    from retrain_airflow import aws_notifiers, notifiers
    from retrain_tools.airflow_api import configured_api_url

    assert aws_notifiers.alert_record is notifiers.alert_record
    assert notifiers.airflow_url() == configured_api_url() == "http://localhost:8093"
    monkeypatch.setenv(
        "AIRFLOW__API__BASE_URL", "https://airflow.example.com/"
    )  # base_url wins: the address people use
    assert notifiers.airflow_url() == configured_api_url() == "https://airflow.example.com"
    assert (
        notifiers.task_url(TaskInstance()) == f"https://airflow.example.com{TASK_PAGE}" == TaskInstance().log_url
    )  # as Airflow's own
