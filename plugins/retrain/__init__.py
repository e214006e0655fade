"""retrain core: config, store, manifests, job specs and the local runner.

Plain Python with no Airflow import, shared by the DAGs, the jobs and the tests.
"""

import os

# MLflow's telemetry off unless told otherwise: why in include/retrain_jobs/__init__.py (the job side's twin).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
