"""Request builders of the aws backend: pure functions from config and job inputs to request dicts.

No Airflow and no boto3 here. ``names`` makes job names, ``locations`` maps store keys and
JobSpecs onto S3 and container paths, ``glue`` and ``sagemaker`` build the requests, ``s3``
the write-once puts, and ``schema`` checks any request against botocore's service model.
"""
