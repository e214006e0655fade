"""Alert notifiers. Locally alerts land in a file (and the task log); on AWS, SNS or Slack."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)


class FileAlertNotifier(BaseNotifier):
    """Appends one JSON line per alert to ``<store>/alerts/<model>.jsonl`` and logs it."""

    template_fields = ("message",)

    def __init__(self, *, model_name: str, message: str) -> None:
        super().__init__()
        self.model_name = model_name
        self.message = message

    def notify(self, context: Any) -> None:
        from retrain.store import LocalStore

        ti = context["ti"]
        alert = {
            "time": datetime.now(timezone.utc).isoformat(),
            "model": self.model_name,
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "task_id": ti.task_id,
            "message": self.message,
            "error": str(context.get("exception") or ""),
        }
        path = LocalStore().path(f"alerts/{self.model_name}.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            handle.write(json.dumps(alert, sort_keys=True) + "\n")
        log.warning("ALERT %s: %s (%s)", self.model_name, self.message, path)
