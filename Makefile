# retrain: local backend. `make demo` and `make test` do all the setup they need.
SHELL := /bin/bash
PY_AIRFLOW ?= $(shell scripts/find-python 3.12)
PY_JOBS    ?= $(shell scripts/find-python 3.11)
ENV        := source scripts/env.sh &&
MODEL      ?= intent
# pytest-xdist workers for make test / test-fast: 3 on 2 cores, since half of the suite's wall time is spent waiting
# (schedulers, deferred tasks, moto's polling); tests/conftest.py keeps each shared stack on one worker.
WORKERS    ?= 3
XDIST      := -n $(WORKERS) --dist loadscope --no-loadscope-reorder

.PHONY: setup redis demo test test-fast lint serve ui seed bench clean-state

setup: .venv-airflow/.installed .venv-jobs/.installed  ## build both virtual environments

.venv-airflow/.installed: requirements.txt requirements-celery.txt requirements-dev.txt constraints/airflow.txt
	$(PY_AIRFLOW) -m venv --clear .venv-airflow
	.venv-airflow/bin/pip install -q --upgrade pip
	.venv-airflow/bin/pip install -q -r requirements.txt -r requirements-celery.txt -r requirements-dev.txt -c constraints/airflow.txt
	touch $@

.venv-jobs/.installed: requirements-jobs.txt requirements-jobs-nodeps.txt constraints/jobs.txt
	$(PY_JOBS) -m venv --clear .venv-jobs
	.venv-jobs/bin/pip install -q pip -c constraints/jobs.txt
	.venv-jobs/bin/pip install -q -r requirements-jobs.txt -c constraints/jobs.txt
	.venv-jobs/bin/pip install -q --no-deps -r requirements-jobs-nodeps.txt -c constraints/jobs.txt
	touch $@

seed: setup  ## land a model's sample raw partitions and golden version (MODEL=intent)
	$(ENV) python -m retrain_tools.seed --model $(MODEL)

demo: setup  ## a model's pipeline end to end under a real Airflow scheduler (MODEL=intent)
	$(ENV) python scripts/demo.py --model $(MODEL) $(DEMO_ARGS)

redis:  ## the Celery tier's broker: installs the distribution's redis-server only when it is absent
	scripts/ensure-redis

test: setup redis  ## every test tier (dags, unit, jobs, integration, celery, aws)
	$(ENV) python -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: setup  ## everything that needs no running Airflow (no scheduler: integration, the Celery pipeline, the aws e2e run)
	$(ENV) python -m pytest $(XDIST) -m "not scheduler" $(PYTEST_ARGS)

lint: .venv-airflow/.installed  ## ruff over the whole tree (rules and line length in pyproject.toml)
	.venv-airflow/bin/ruff check .

serve: setup  ## the local model server in the background: every model's endpoint (bin/retrain serve --stop stops it)
	$(ENV) bin/retrain serve

ui: setup  ## Airflow UI on :8080 and MLflow UI on :5000 over the demo's state
	$(ENV) (umask 077; MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true .venv-jobs/bin/mlflow ui --backend-store-uri "$$MLFLOW_TRACKING_URI" --port 5000 & airflow standalone)

bench: setup  ## benchmarks (figures and ratios, never assertions)
	$(ENV) python bench/run.py $(BENCH_ARGS)

clean-state:  ## delete local run state (.retrain, .airflow); code and venvs stay
	rm -rf .retrain .airflow
