"""A job's first MLflow call at a given instant: sleep until Unix time ``argv[1]``, then
``retrain.tracking.ensure_experiment(argv[1])`` against MLFLOW_TRACKING_URI, and print the experiment id. Two of these
started together on a fresh SQLite store are two models' first runs racing to create MLflow's tables.

Run by tests/jobs/test_tracking_store.py, in the job environment (PYTHONPATH=include:plugins):
``python tests/jobside/first_use.py <unix time> <experiment name>``
"""

from __future__ import annotations

import sys
import time


def main(argv: list[str]) -> None:
    import mlflow  # noqa: F401 - loaded before the wait, as above

    from retrain.tracking import ensure_experiment  # imports mlflow: done before the wait, so both start at once

    time.sleep(max(0.0, float(argv[0]) - time.time()))
    print(ensure_experiment(argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
