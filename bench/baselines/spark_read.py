"""The baseline of bench/etl_scale.py: start Spark and read the raw snapshot, nothing else.

Runs with the job interpreter (PYTHONPATH=include:plugins), with build_dataset's own Spark
session settings and CSV reader, then a trivial count. What build_dataset takes beyond this
is the ETL's own work: input verification, cleaning, dedupe, decontamination, split, writes.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from etl.build_dataset import read_raw, spark_session
from retrain.store import LocalStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw-manifest", required=True)
    parser.add_argument("--store-root", required=True)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="category")
    parser.add_argument("--spark-master", default=os.environ.get("SPARK_MASTER", "local[2]"))  # as build_dataset
    args = parser.parse_args()
    spark, _ = spark_session(args.spark_master)
    try:
        manifest = json.loads(Path(args.raw_manifest).read_text())
        store = LocalStore(args.store_root)
        inputs = {"raw_uris": [store.uri(entry["key"]) for entry in manifest["files"]]}  # as build_dataset reads them
        rows = read_raw(spark, inputs, args).count()
    finally:
        spark.stop()
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
