"""Job names: unique per run and try, and inside SageMaker's name pattern.

Airflow run ids hold ':', '+' and '.' (``scheduled__2026-09-14T00:00:00+00:00``) and can
be any length, while SageMaker wants ``[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}`` and never reuses
a name. Sanitising and truncating alone would merge distinct runs, so every name ends with
a short hash of the full, unsanitised identity and the try number.
"""

from __future__ import annotations

import hashlib
import re

MAX_LENGTH = 63
SAGEMAKER_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-")


def job_name(model: str, task: str, run_id: str, try_number: int) -> str:
    """``<model>-<task>-<run>-<hash8>-t<try>``, at most 63 characters; distinct runs and tries never share one."""
    if try_number < 1:
        raise ValueError(f"try_number: must be >= 1, got {try_number}")
    digest = hashlib.sha256("\0".join((model, task, run_id)).encode()).hexdigest()[:8]
    suffix = f"-{digest}-t{try_number}"
    if len(suffix) >= MAX_LENGTH:
        raise ValueError(f"try_number: {try_number} leaves no room in a {MAX_LENGTH}-character name")
    head = "-".join(part for part in (_slug(model), _slug(task), _slug(run_id)) if part)
    head = head[: MAX_LENGTH - len(suffix)].rstrip("-")
    name = f"{head}{suffix}" if head else suffix.lstrip("-")
    assert SAGEMAKER_NAME.fullmatch(name), name  # the construction above guarantees it
    return name


def glue_job_name(model: str, code_version: str) -> str:
    """The Glue job definition of one model and code version.

    GlueJobOperator reuses an existing job unchanged unless ``update_config=True``, so the
    code version is part of the name: a new deploy gets a new job, an old one is never edited.
    """
    return f"retrain-{_slug(model)}-build-dataset-{_slug(code_version)[:12]}"


BAD_INPUT_MARKER = "[retrain: bad input, not retried]"
"""Starts the error a job raises on Glue when it rejects its input (``include/etl/build_dataset.py``).

Glue reports no exit code, only an uncaught exception as the run's ErrorMessage; the Glue operator
(``retrain_airflow.aws_operators``) fails the task without retries when it finds this there, as the local
runner does for exit status EX_DATAERR. It lives here because both sides import this module without
pulling in pydantic or boto3."""
