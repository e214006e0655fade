"""Developer tooling: what a person runs (``bin/retrain``), never what runs on MWAA's workers.

``cli`` (``bin/retrain``), ``seed`` (sample data and golden sets), ``dagfiles`` (``dags sync``),
``airflow_api`` (the REST client of ``runs``, ``approve`` and the tests), ``aws_docs`` (the generated
``aws:`` table of docs/aws.md) and ``deploy/`` (the MWAA bundle and its push). None of it ships in
``plugins.zip``; the runtime (``plugins/retrain``, ``plugins/retrain_airflow``) never imports it.
"""
