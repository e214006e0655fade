"""Resolve the hub id 'distilbert-base-uncased' as a base model and print how that fails: ``module.Type | message``.

Run (twice: offline, then with the hub client pointed at a closed port) by
tests/jobs/test_train.py::test_a_hub_base_model_is_refused_with_or_without_the_hub_in_reach,
in the job environment (PYTHONPATH=include:plugins): ``python tests/jobside/resolve_hub_model.py``
"""

from __future__ import annotations

import sys

from retrain_jobs.base import resolve_base_model


def main(argv: list[str]) -> None:
    try:
        resolve_base_model("distilbert-base-uncased")
    except Exception as exc:
        print(type(exc).__module__ + "." + type(exc).__name__, "|", exc)


if __name__ == "__main__":
    main(sys.argv[1:])
