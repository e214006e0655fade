"""The aws backend's SNS alerts: the provider's ``SnsNotifier``, carrying the same record as the local alert.

Imported only when an aws DAG is built (the provider module imports boto3).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

from retrain_airflow.notifiers import alert_record, alert_text, log

SUBJECT_MAX = 100  # SNS refuses longer subjects


class AlertSnsNotifier(SnsNotifier):
    """Publishes each alert to the model's SNS topic: the run link and the reason, then the JSON record."""

    def __init__(
        self,
        *,
        model_name: str,
        topic_arn: str,
        region_name: str,
        aws_conn_id: str | None = "aws_default",
        message: str = "{{ ti.task_id }} failed in {{ ti.dag_id }} run {{ ti.run_id }}",
    ) -> None:
        super().__init__(target_arn=topic_arn, message=message, region_name=region_name, aws_conn_id=aws_conn_id)
        self.model_name = model_name

    def notify(self, context: Any, reason: str | None = None) -> dict[str, Any]:
        """Publish one alert; ``reason`` replaces the failing exception (an approval timeout has none)."""
        alert = alert_record(self.model_name, self.message, context, reason)
        # Subjects are one line of ASCII-ish text; the full record goes in the body.
        subject = " ".join(f"[retrain {self.model_name}] {alert['message']}".split())[:SUBJECT_MAX]
        # Published through the provider's hook, not by rewriting self.message, which is the template.
        self.hook.publish_to_target(
            target_arn=self.target_arn,
            message=alert_text(alert),
            subject=subject,
            message_attributes=self.message_attributes,
        )
        log.warning(
            "ALERT %s: %s: %s (%s; SNS %s)",
            self.model_name,
            alert["message"],
            alert["reason"],
            alert["url"],
            self.target_arn,
        )
        return alert
