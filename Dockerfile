# One image for every Airflow container of docker-compose.yaml: Airflow 3.3.1 on Python 3.12 (MWAA
# 3.3.1's), the Celery executor with its Redis and Postgres clients at MWAA's pins, and the job
# environment at /opt/venv-jobs, which the local runner starts jobs with (RETRAIN_JOB_PYTHON).
# The base image must stay scripts/celery_stack.py's AIRFLOW_IMAGE (tests/celery checks it).
FROM apache/airflow:3.3.1-python3.12
USER root
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*
COPY requirements-jobs.txt constraints/jobs.txt /tmp/
RUN python3.11 -m venv /opt/venv-jobs \
    && /opt/venv-jobs/bin/pip install --no-cache-dir -r /tmp/requirements-jobs.txt -c /tmp/jobs.txt
# The object store's mount point, owned by the user the containers run as: an empty named volume
# takes this ownership when first mounted, so every worker can write the store.
RUN mkdir -p /var/lib/retrain && chown airflow:root /var/lib/retrain
USER airflow
COPY requirements.txt requirements-celery.txt constraints/airflow.txt /tmp/
RUN pip install --no-cache-dir -r /tmp/requirements.txt -r /tmp/requirements-celery.txt -c /tmp/airflow.txt
