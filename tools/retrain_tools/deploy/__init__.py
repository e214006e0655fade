"""Deploying to Amazon MWAA: build a reproducible bundle (``bundle``), check it the way MWAA
installs and parses it (``resolve``, ``parsing``), and push it to an environment (``push``).
Plain Python: no Airflow import; boto3 is imported only by ``push``.
"""
