"""Airflow DAG file: one retrain_<model> DAG per config in config/models/.

It declares nothing itself: the factory in plugins/retrain_airflow builds every DAG
from its validated config. Nothing heavy is imported at parse time (tests/dags proves it).
"""

from retrain_airflow.factory import build_all

globals().update(build_all())
