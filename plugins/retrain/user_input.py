"""Rules for what people and Airflow type into a run: run ids and free-text reasons.

Both reach AWS requests long after they were typed: a run id goes into every job's lineage and into the model
package's metadata at ``register_model``, after training and evaluation have been paid for; a reason goes into
``UpdateModelPackage.ApprovalDescription`` at ``promote_model``, after a person approved. So they are checked where
they enter (the DAG's params, Airflow's ``allowed_run_id_pattern``, the CLI, ``snapshot_raw``), with a message that
says what is wrong, and a reason is also made one line before it is sent, so no approved run is stranded by its text.

The limits come from the SageMaker API model (botocore):

- ``CreateModelPackage.CustomerMetadataProperties`` values match ``[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*``: of the characters
  Airflow's default ``allowed_run_id_pattern`` (``^[A-Za-z0-9_.~:+-]+$``) allows, ``~`` is not among them.
- ``CreateTrainingJob.Environment`` values are at most 512 characters; ``RETRAIN_LINEAGE`` holds the run id beside
  the rest of the lineage (``RUN_ID_MAX_CHARS`` leaves room for it: tests/aws/test_requests.py checks every shipped
  config at that length).
- ``UpdateModelPackage.ApprovalDescription`` is at most 1024 characters and matches ``.*``: one line.

Nothing here imports anything heavy: the DAG factory reads the patterns at parse time.
"""

from __future__ import annotations

import re

RUN_ID_MAX_CHARS = 100
RUN_ID_PATTERN = rf"^[A-Za-z0-9_.:+-]{{1,{RUN_ID_MAX_CHARS}}}$"
"""Airflow's default allowed_run_id_pattern without ``~``, and at most RUN_ID_MAX_CHARS long. Set as Airflow's
``[scheduler] allowed_run_id_pattern`` (scripts/env.sh; the MWAA environment's configuration options)."""

REASON_MAX_CHARS = 1000
"""ApprovalDescription takes 1024; the rest is left for what the operators add."""
# What ends a line for Java's `.` (and for a person reading the ledger):
_LINE_BREAK_CLASS = r"\n\r\x0b\x0c\x85\u2028\u2029"
_LINE_BREAKS = _LINE_BREAK_CLASS.encode().decode("unicode_escape")
_CONTROLS = r"\x00-\x08\x0e-\x1f\x7f"  # the other control characters (a tab stays)
REASON_PATTERN = f"^[^{_LINE_BREAK_CLASS}{_CONTROLS}]*$"
"""One line of printable text (tabs allowed): the JSON-schema pattern of every ``reason`` param."""
_REASON = re.compile(REASON_PATTERN)
_RUN_ID = re.compile(RUN_ID_PATTERN)


class InputRefused(ValueError):
    """A run id or reason that would break an AWS request later; the message says what is wrong and the rule."""


def run_id_problem(run_id: str) -> str | None:
    """What is wrong with ``run_id`` (None when it fits every AWS field it reaches)."""
    if _RUN_ID.fullmatch(run_id):
        return None
    if not run_id:
        return "it is empty"
    if len(run_id) > RUN_ID_MAX_CHARS:
        return f"it is {len(run_id)} characters long, over {RUN_ID_MAX_CHARS}"
    position, char = next((i, c) for i, c in enumerate(run_id) if not re.fullmatch(r"[A-Za-z0-9_.:+-]", c))
    return f"character {char!r} at position {position} is not allowed"


def check_run_id(run_id: str) -> str:
    """``run_id`` itself, or InputRefused naming the problem and the rule."""
    problem = run_id_problem(run_id)
    if problem:
        raise InputRefused(
            f"run id {run_id!r}: {problem}; rule: run ids match {RUN_ID_PATTERN} (letters, digits and _ . : + -), "
            "because the run id goes into SageMaker's model package metadata and job environment, whose patterns "
            "and lengths allow no more. Trigger the run again with another run id; nothing was started."
        )
    return run_id


def reason_problem(reason: str) -> str | None:
    """What is wrong with a typed reason (None when it fits ApprovalDescription as it is)."""
    if len(reason) > REASON_MAX_CHARS:
        return f"it is {len(reason)} characters long, over {REASON_MAX_CHARS}"
    if _REASON.fullmatch(reason):
        return None
    position, char = next((i, c) for i, c in enumerate(reason) if not _REASON.fullmatch(c))
    kind = "a line break" if char in _LINE_BREAKS else "a control character"
    return f"{kind} ({char!r}) at position {position}; a reason is one line"


def check_reason(reason: str, field: str = "reason") -> str:
    """``reason`` itself, or InputRefused naming the field, the problem and the rule."""
    problem = reason_problem(reason)
    if problem:
        raise InputRefused(
            f"{field}: {problem}; rule: one line of at most {REASON_MAX_CHARS} printable characters "
            "(SageMaker's ApprovalDescription)"
        )
    return reason


def one_line(text: str, limit: int = REASON_MAX_CHARS) -> str:
    """``text`` as one line of at most ``limit`` characters: line breaks and control characters become spaces, runs
    of spaces one space. What is sent to AWS when a reason came in some other way than a checked param."""
    cleaned = "".join(" " if (c in _LINE_BREAKS or not _REASON.fullmatch(c)) else c for c in text)
    cleaned = re.sub(r" {2,}", " ", cleaned).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"
