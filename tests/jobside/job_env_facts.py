"""Facts about the job environment for the job image tests: its Python, its installed distributions, and what
build_dataset imports beyond Spark (with the distributions those imports come from).

Run by tests/jobs/test_job_image.py in the job environment (PYTHONPATH=include:plugins):
``python tests/jobside/job_env_facts.py`` prints one JSON object.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import sys


def _imported_top_levels() -> set[str]:
    return {name.split(".")[0] for name in sys.modules}


def glue_imports() -> list[str]:
    """Distributions whose modules build_dataset (and the S3 store it writes through) imports and Spark does not."""
    import pyspark.sql  # noqa: F401  # Glue brings Spark and what it imports

    spark = _imported_top_levels()
    import boto3  # noqa: F401  # retrain.store.s3 imports it when the store is on S3, as on Glue

    import etl.build_dataset  # noqa: F401

    owners = metadata.packages_distributions()
    return sorted({dist for module in _imported_top_levels() - spark for dist in owners.get(module, [])})


def main() -> None:
    installed = {dist.metadata["Name"]: dist.version for dist in metadata.distributions()}
    print(json.dumps({"python": list(sys.version_info[:3]), "installed": installed, "glue_imports": glue_imports()}))


if __name__ == "__main__":
    main()
