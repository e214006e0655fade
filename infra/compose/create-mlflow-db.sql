-- Run once by the postgres image on an empty data volume (docker-entrypoint-initdb.d): MLflow's
-- tracking store gets a database of its own beside Airflow's (scripts/celery_stack.py does the same).
CREATE DATABASE mlflow;
