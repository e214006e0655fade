"""A real Airflow (``airflow standalone``: scheduler, API server, DAG processor, triggerer)
over tiny data, for the integration tier. Nothing here is mocked.

Tiny models share the data: ``intent`` (the shipped policy), ``intent_strict``, whose gate
floor no model can reach, so its runs show a gate rejection, and ``intent_backfill`` (the
same unreachable floor, three weekly partitions) for backfills, and ``intent_race`` (like
``intent``) for two overlapping runs, and ``intent_timeout``, whose approval times out after 18 s. Their DAG files are
generated into the stack's own DAGs folder by the project's ``dags sync``, as a user adding
a model would; ``broken.yaml`` is a config with a bad field, which must show up as an
import error while the others load.
"""

from __future__ import annotations

import os

import pytest

from airflowstack import TinyProject, registry_status_reader, standalone_airflow, user_factory, write_csv

MODELS = ("intent", "intent_strict", "intent_backfill", "intent_race", "intent_timeout")
UNREACHABLE_FLOOR = ("intent_strict", "intent_backfill")


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """Tiny sample data in a fresh store, and a running Airflow whose DAGs read tiny configs."""
    project = TinyProject(tmp_path_factory.mktemp("integration"))
    root, store_root = project.root, project.store_root
    for model in MODELS:
        project.add_model(model, unreachable_floor=model in UNREACHABLE_FLOOR)
    for model in ("intent", "intent_strict", "intent_race", "intent_timeout"):
        project.land_two_weeks(model)
    project.land_past_weeks("intent_backfill")  # one partition per past week, for a three-week backfill
    broken = (project.config_dir / "intent.yaml").read_text().replace("name: intent", "name: broken").replace("cadence: weekly", "cadence: hourly")
    (project.config_dir / "broken.yaml").write_text(broken)
    project.sync_dags()

    env = project.env(dict(os.environ))
    project.publish_golden(env, MODELS)
    with standalone_airflow(env, root, tuple(f"retrain_{model}" for model in MODELS)) as client:
        yield {
            "client": client, "as_user": user_factory(client), "registry_status": registry_status_reader(env), "store_root": store_root,
            "interval": project.interval, "env": env, "root": root, "config_dir": project.config_dir, "dags_dir": project.dags_dir,
            "log": root / "standalone.log", "write_csv": write_csv,
        }
