# Shared environment of the local backend. Sourced by the Makefile targets and .ci/run.
# Everything lives under the project: Airflow's home and DB, the object store, MLflow.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export RETRAIN_PROJECT_ROOT="$ROOT"
export RETRAIN_HOME="${RETRAIN_HOME:-$ROOT/.retrain}"
export RETRAIN_JOB_PYTHON="${RETRAIN_JOB_PYTHON:-$ROOT/.venv-jobs/bin/python}"
export RETRAIN_BACKEND="${RETRAIN_BACKEND:-local}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$ROOT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=True
# Named users of the simple auth manager: alice is the assigned approver of the demo model,
# bob is a user who is not assigned (his answer is refused). Passwords are generated into
# $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated.
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin,alice:op,bob:op}"
# The API server listens on this machine only (Airflow's default is every interface): whoever reaches it with a
# password could approve or roll back. `make ui` also starts Airflow under umask 077, so the password file is owner-only.
export AIRFLOW__API__HOST="${AIRFLOW__API__HOST:-127.0.0.1}"
# Run ids that fit AWS's fields (retrain/user_input.py's RUN_ID_PATTERN; tests/unit/test_user_input.py checks they agree).
export AIRFLOW__SCHEDULER__ALLOWED_RUN_ID_PATTERN='^[A-Za-z0-9_.:+-]{1,100}$'
export AIRFLOW__LOGGING__LOGGING_LEVEL="${AIRFLOW__LOGGING__LOGGING_LEVEL:-INFO}"
export PYTHONPATH="$ROOT/plugins:$ROOT/tools${PYTHONPATH:+:$PYTHONPATH}"  # tools: bin/retrain's tooling, never shipped to MWAA
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$RETRAIN_HOME/mlflow.db}"
export PATH="$ROOT/.venv-airflow/bin:$PATH"   # `airflow standalone` needs the venv's bin on PATH
