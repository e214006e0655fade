"""The job-side scripts of the tests: tests/jobside/, one module per check that has to run in the job environment
(torch, transformers, mlflow), which the Airflow environment running pytest does not have. A test runs one as
``[str(job_python()), str(JOBSIDE / "name.py"), *args]`` with PYTHONPATH onto include/ and plugins/ (the runner's
job environment); nothing in the Airflow environment imports them."""

from __future__ import annotations

from pathlib import Path

JOBSIDE = Path(__file__).resolve().parent / "jobside"
