"""retrain core: config, store, manifests, job specs and the local runner.

Plain Python with no Airflow import, shared by the DAGs, the jobs and the tests.
"""
