"""retrain core: config, store, manifests, job specs and the local runner.

Plain Python with no Airflow import, shared by the DAGs, the jobs and the tests.
"""

import os

# MLflow's telemetry thread sets and unsets an environment variable while other threads iterate os.environ (requests
# reads its proxies there): a training job failed with KeyError '_MLFLOW_TELEMETRY_SESSION_ID' on its first MLflow
# call. Telemetry would call a host outside anyway, which no job may do. Set before any mlflow import; an explicit
# setting wins.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
