# One image for machines with a Docker engine: Airflow 3.3.1 (MWAA's pins) plus the job
# environment at /opt/venv-jobs, which the local runner starts jobs with (RETRAIN_JOB_PYTHON).
FROM apache/airflow:3.3.1-python3.12
USER root
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*
COPY requirements-jobs.txt constraints/jobs.txt /tmp/
RUN python3.11 -m venv /opt/venv-jobs \
    && /opt/venv-jobs/bin/pip install --no-cache-dir -r /tmp/requirements-jobs.txt -c /tmp/jobs.txt
USER airflow
COPY requirements.txt constraints/airflow.txt /tmp/
RUN pip install --no-cache-dir -r /tmp/requirements.txt -c /tmp/airflow.txt
