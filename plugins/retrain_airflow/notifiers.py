"""Alert notifiers. Locally alerts land in a file (and the task log); on AWS, SNS or Slack.

Every alert says which model, run and task, links to the task in the Airflow UI, and
gives the reason: the exception that failed the task, or the reason passed by the caller
(an approval timeout is not a task failure, so its operator alerts explicitly).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)


def airflow_url() -> str:
    """Where this Airflow's UI is, by Airflow's own config: ``[api] base_url``, else localhost on ``[api] port``
    (retrain.paths.api_base_url, the rule the CLI follows too). A task instance's ``log_url`` falls back to
    localhost:8080 whatever the port, so alert links are built here."""
    from airflow.sdk.configuration import conf

    from retrain.paths import api_base_url

    return api_base_url(lambda key: conf.get("api", key, fallback=None))


def task_url(ti: Any) -> str:
    """The task instance's page in the Airflow UI (the path of Airflow's own ``log_url``), on ``airflow_url()``."""
    map_index, try_number = getattr(ti, "map_index", None), getattr(ti, "try_number", None)
    mapped = f"/mapped/{map_index}" if map_index is not None and map_index >= 0 else ""
    attempt = f"?try_number={try_number}" if try_number else ""
    return f"{airflow_url()}/dags/{ti.dag_id}/runs/{quote(ti.run_id)}/tasks/{ti.task_id}{mapped}{attempt}"


def alert_record(model: str, message: str, context: Any, reason: str | None = None) -> dict[str, Any]:
    """One alert as JSON: what failed, where to look (the run link) and why."""
    ti = context["ti"]
    return {
        "time": datetime.now(UTC).isoformat(),
        "model": model,
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "try_number": getattr(ti, "try_number", None),
        "url": task_url(ti),
        "message": message,
        "reason": reason if reason is not None else str(context.get("exception") or ""),
    }


class FileAlertNotifier(BaseNotifier):
    """Appends one JSON line per alert to ``<store>/alerts/<model>.jsonl`` and logs it."""

    template_fields = ("message",)

    def __init__(
        self, *, model_name: str, message: str = "{{ ti.task_id }} failed in {{ ti.dag_id }} run {{ ti.run_id }}"
    ) -> None:
        super().__init__()
        self.model_name = model_name
        self.message = message

    def notify(self, context: Any, reason: str | None = None) -> dict[str, Any]:
        from retrain.store import LocalStore

        alert = alert_record(self.model_name, self.message, context, reason)
        path = LocalStore().path(f"alerts/{self.model_name}.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            handle.write(json.dumps(alert, sort_keys=True) + "\n")
        log.warning("ALERT %s: %s: %s (%s; %s)", self.model_name, alert["message"], alert["reason"], alert["url"], path)
        return alert


def alert_text(alert: dict[str, Any]) -> str:
    """An alert as a person reads it in an e-mail or a chat: what, why, where to look, then the record."""
    return f"{alert['message']}\nreason: {alert['reason'] or '(none given)'}\nlink: {alert['url']}\n\n" + json.dumps(
        alert, indent=2, sort_keys=True
    )


class SlackAlertNotifier(BaseNotifier):
    """Posts each alert to a Slack incoming webhook (an Airflow connection); the aws backend's alternative to SNS.

    The Slack provider is imported when an alert is sent, so parsing does not need it; the
    factory checks at parse time that it is installed.
    """

    template_fields = ("message",)

    def __init__(
        self,
        *,
        model_name: str,
        slack_webhook_conn_id: str,
        message: str = "{{ ti.task_id }} failed in {{ ti.dag_id }} run {{ ti.run_id }}",
    ) -> None:
        super().__init__()
        self.model_name = model_name
        self.slack_webhook_conn_id = slack_webhook_conn_id
        self.message = message

    def notify(self, context: Any, reason: str | None = None) -> dict[str, Any]:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        alert = alert_record(self.model_name, self.message, context, reason)
        SlackWebhookHook(slack_webhook_conn_id=self.slack_webhook_conn_id).send(text=alert_text(alert))
        log.warning(
            "ALERT %s: %s: %s (%s; Slack %s)",
            self.model_name,
            alert["message"],
            alert["reason"],
            alert["url"],
            self.slack_webhook_conn_id,
        )
        return alert
