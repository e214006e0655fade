"""The job side: what runs in the job environment (locally), in SageMaker containers and (the ETL) on Glue.

Entry scripts: ``train.py`` (SageMaker script mode) and ``evaluate.py`` (a processing job). Shared
pieces: ``base.py`` (weights digests, base-model resolution), ``report.py`` (report.html),
``ranking.py`` (ranking metrics), ``mlflow_model.py`` (the served pyfunc). One package per task type
under ``tasks/``. Nothing here imports Airflow.
"""

import os

# MLflow's telemetry thread sets and unsets an environment variable while other threads iterate os.environ (requests
# reads its proxies there): a training job failed with KeyError '_MLFLOW_TELEMETRY_SESSION_ID' on its first MLflow
# call. Telemetry would call a host outside anyway, which no job may do. Set before any mlflow import; an explicit
# setting wins.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
