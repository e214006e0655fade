"""The Celery tier: the local backend deployed as MWAA deploys Airflow, one deployment per session.

``scripts/celery_stack.py`` starts Postgres (Airflow's metadata, Celery's results, and MLflow's
tracking store in a database of its own), Redis as the broker, and a scheduler, a DAG processor,
an API server, a triggerer and two Celery workers, each a process of its own, in a working directory
that is not the project's. The tiny project (tiny Banking77 data, the tiny ``intent`` config) is the
integration tier's, from ``tests/airflowstack.py``, and the project's model server runs beside it (the second run's
shadow and canary run on it). Nothing here is mocked.
"""

from __future__ import annotations

import os
from contextlib import ExitStack

import pytest

from airflowstack import TinyProject, logged_in, model_server, registry_status_reader, user_factory
from celery_stack import CeleryStack


@pytest.fixture(scope="session")
def deployment(tmp_path_factory):
    """The running Celery deployment over a tiny ``intent`` project; stopped (every process) at the end."""
    project, stack_server = TinyProject(tmp_path_factory.mktemp("celery")), ExitStack()
    project.add_model("intent")
    project.land_two_weeks("intent")
    project.sync_dags()
    base = project.env(dict(os.environ))
    project.publish_golden(base, ("intent",))
    stack = CeleryStack(project.root / "deployment", base).start()
    try:
        client = logged_in(stack.api_url, project.airflow_home, ("retrain_intent", "rollback_intent"))
        server = stack_server.enter_context(model_server(stack.env))  # its registry: MLflow on the Postgres server
        yield {
            "server": server,
            "stack": stack,
            "project": project,
            "client": client,
            "as_user": user_factory(client),
            "registry_status": registry_status_reader(stack.env),
            "store_root": project.store_root,
            "env": stack.env,
        }
    finally:
        stack_server.close()
        stack.stop()
