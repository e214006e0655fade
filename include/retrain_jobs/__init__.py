"""The job side: what runs in the job environment (locally), in SageMaker containers and (the ETL) on Glue.

Entry scripts: ``train.py`` (SageMaker script mode) and ``evaluate.py`` (a processing job). Shared
pieces: ``base.py`` (weights digests, base-model resolution), ``report.py`` (report.html),
``ranking.py`` (ranking metrics), ``mlflow_model.py`` (the served pyfunc). One package per task type
under ``tasks/``. Nothing here imports Airflow.
"""
