"""Which fixtures start a real Airflow: tests/conftest.py marks their tests ``scheduler`` (``make test-fast`` leaves
them out), and tests/unit/test_markers.py checks that nothing else in tests/ starts one unmarked. A module of its own
because a test cannot import ``conftest`` reliably: each tier has a conftest.py, and the first one imported takes the
name."""

from __future__ import annotations

STARTS_AIRFLOW = frozenset(
    {
        ("integration/conftest.py", "stack"),
        ("celery/conftest.py", "deployment"),
        ("aws/test_pipeline_simulated.py", "aws_stack"),
    }
)
"""Fixtures that start a real Airflow, by the file under tests/ that defines them and their name (a name alone is not
enough: tests/aws/test_infrastructure.py's ``stack`` is a CloudFormation template): the integration tier's ``stack``
(``airflow standalone``), the Celery tier's ``deployment`` (scheduler, API server, Celery workers) and the aws
end-to-end run's ``aws_stack`` (``airflow standalone`` on the aws backend). A test that uses one, directly or
through another fixture, is ``scheduler``."""
