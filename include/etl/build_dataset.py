"""build_dataset: the Spark ETL that turns a raw snapshot into a content-addressed dataset version.

The same script runs on AWS Glue 5.1 (Spark 3.5.6, Python 3.11) and on local Spark. It knows
nothing about Airflow: its inputs are the arguments below, its outputs are the version
directory ``datasets/<model>/<version>/`` and the JSON ``--result-file``. Locally, from the
project root (this is what the local runner starts):

    PYTHONPATH=include:plugins .venv-jobs/bin/python include/etl/build_dataset.py \\
        --model intent --raw-manifest .retrain/runs/intent/<run_id>/snapshot_raw/manifest.json \\
        --store-root .retrain --text-column text --label-column category \\
        --labels-file data/banking77/categories.json --golden-version v1 \\
        --validation-fraction 0.1 --result-file /tmp/build_dataset/result.json

Steps: verify raw files and golden set -> clean text -> drop exact, then normalised duplicates
(majority label wins) -> drop golden-set overlaps -> map labels -> split by key hash -> write
train/train.jsonl and validation/validation.jsonl -> publish the version with its manifest (write-once).
Each split sits in its own directory because that directory is the training job's channel
(SM_CHANNEL_TRAIN / SM_CHANNEL_VALIDATION, see retrain.jobs.train_model_spec).
Exit status EX_DATAERR (65) with a one-line reason (file + rule) when an input breaks a rule:
the runner then fails the task without retrying, since the same input fails again.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shutil
import sys
import tempfile
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from retrain.snapshot import RawDataError, decode_utf8_bytes, header_problems, verify_raw_files
from retrain.store import (
    MANIFEST_NAME,
    IntegrityError,
    Store,
    WriteOnceError,
    read_json_at,
    sha256_file,
    store_for,
    tree_digest,
    write_json_at,
)

SPLITS = ("train", "validation")


def split_file(root: Path, split: str) -> Path:
    """<version>/<split>/<split>.jsonl: the split's directory is its training channel."""
    return root / split / f"{split}.jsonl"


WHITESPACE = r"(?U)\s+"  # (?U): Unicode whitespace, not only ASCII
PUNCTUATION = r"\p{P}+"  # Unicode punctuation; symbols such as $ and £ carry meaning and stay


class BuildError(ValueError):
    """Input breaks a rule of this job; the message names the file and the rule."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Build a versioned train/validation dataset.")
    for name in (
        "model",
        "raw-manifest",
        "store-root",
        "text-column",
        "label-column",
        "labels-file",
        "golden-version",
        "result-file",
    ):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--validation-fraction", type=float, required=True)
    parser.add_argument(
        "--expected-golden-sha256", default="", help="the config's pinned golden hash; any other content is refused"
    )
    # With --store-root s3://<dataset bucket> (Glue): the deployment's other two buckets (else RETRAIN_*_BUCKET).
    parser.add_argument("--artifact-bucket", default=None)
    parser.add_argument("--golden-bucket", default=None)
    parser.add_argument("--spark-master", default=os.environ.get("SPARK_MASTER", "local[2]"))
    args, _glue_extras = parser.parse_known_args(argv)  # Glue adds --JOB_NAME, --TempDir, ...
    if not 0.0 <= args.validation_fraction < 1.0:
        parser.error("--validation-fraction must be in [0, 1)")
    return args


def load_inputs(args: argparse.Namespace, store: Store, scratch: Path) -> dict[str, Any]:
    """Verify every input before Spark starts, so bad inputs fail in a second, not after start-up.

    Spark reads files: on S3 the snapshot's files and the golden version are copied into
    ``scratch`` first (verified), on disk they are read where they are."""
    raw_manifest = read_json_at(store, args.raw_manifest)
    if raw_manifest.get("model") != args.model:
        raise BuildError(
            f"{args.raw_manifest}: manifest is for model {raw_manifest.get('model')!r}; rule: it must be for "
            f"{args.model!r}"
        )
    verify_raw_files(store, raw_manifest)
    raw_paths = [store.local_file(entry["key"], scratch / "raw") for entry in raw_manifest["files"]]
    for entry, path in zip(
        raw_manifest["files"], raw_paths, strict=True
    ):  # the header rule, before Spark: bad data, never a crash to retry
        header = next(
            csv.reader(io.StringIO(decode_utf8_bytes(path.read_bytes(), store.uri(entry["key"])), newline="")), []
        )
        problems = header_problems(header, args.text_column, args.label_column)
        if problems:
            raise BuildError(f"{store.uri(entry['key'])}: row 1 (header): {'; '.join(problems)} (value: {header})")
    # Every read of a golden set checks its hashes first, and against the config's pin: a golden file edited
    # with its manifest re-hashed verifies on its own, but not against the pin.
    golden_dir = store.materialize_version(
        f"golden/{args.model}/{args.golden_version}", args.expected_golden_sha256 or None, dest=scratch / "golden"
    )
    golden_manifest = json.loads((golden_dir / MANIFEST_NAME).read_text())
    if not (golden_dir / "golden.jsonl").is_file():
        raise BuildError(f"{golden_dir / 'golden.jsonl'}: missing; rule: a golden version holds golden.jsonl")
    labels = json.loads(Path(args.labels_file).read_text())
    if not labels or len(set(labels)) != len(labels) or not all(isinstance(x, str) for x in labels):
        raise BuildError(f"{args.labels_file}: rule: the labels file is a non-empty JSON list of unique strings")
    return {
        "raw_manifest": raw_manifest,
        "raw_paths": raw_paths,
        "golden_dir": golden_dir,
        "golden_manifest": golden_manifest,
        "labels": labels,
        "scratch": scratch,
    }


def spark_session(master: str) -> tuple[SparkSession, bool]:
    """Our own small local Spark, unless a launcher (Glue, spark-submit) already configured one."""
    builder = SparkSession.builder.appName("build_dataset")
    owned = "PYSPARK_GATEWAY_PORT" not in os.environ  # set by spark-submit / Glue; then their settings win
    if owned:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers need this env's pandas/pyarrow
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # local mode needs no network; skips a warning
        builder = (
            builder.master(master)
            .config("spark.driver.memory", "6g")  # local mode: executors live in the driver JVM
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "4")
        )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark, owned


@F.pandas_udf(StringType())
def nfkc(texts: pd.Series) -> pd.Series:
    # Spark has no Unicode normaliser, so this is the one Python step. ASCII text (almost every
    # row) is already NFKC, and the isascii() check keeps the UDF at C speed for it.
    return texts.map(lambda t: t if t is None or t.isascii() else unicodedata.normalize("NFKC", t))


def with_text_columns(df: DataFrame, source: str) -> DataFrame:
    """text (cleaned), norm (dedupe/contamination form) and key = sha256(norm). Used for raw and golden alike."""
    text = F.trim(F.regexp_replace(nfkc(F.col(source)), WHITESPACE, " "))
    norm = F.trim(F.regexp_replace(F.regexp_replace(F.lower(F.col("text")), PUNCTUATION, ""), WHITESPACE, " "))
    return df.withColumn("text", text).withColumn("norm", norm).withColumn("key", F.sha2(F.col("norm"), 256))


def read_raw(spark: SparkSession, inputs: dict[str, Any], args: argparse.Namespace) -> DataFrame:
    paths = [str(path) for path in inputs["raw_paths"]]
    raw = (
        spark.read.option("header", True)
        # quoted newlines; Python's csv module (snapshot_raw) agrees. Reading each file as one stream
        # also drops a leading UTF-8 BOM (Excel), which the line-based reader would keep in the first column's name.
        .option("multiLine", True)
        .option("escape", '"')  # RFC 4180 "" inside quotes
        .option("mode", "FAILFAST")
        .option("enforceSchema", False)  # every file's header must match, not just the first's
        .csv(paths)
    )
    missing = [c for c in (args.text_column, args.label_column) if c not in raw.columns]
    if missing:
        raise BuildError(
            f"{paths[0]}: missing column(s) {missing}; rule: raw CSVs have columns {args.text_column!r} and "
            f"{args.label_column!r}"
        )
    return raw.select(F.col(args.text_column).alias("raw_text"), F.trim(F.col(args.label_column)).alias("label"))


def spread(spark: SparkSession, df: DataFrame) -> DataFrame:
    """multiLine CSVs are not splittable, so one big file is one task: spread its rows over every core."""
    cores = spark.sparkContext.defaultParallelism
    return df.repartition(cores) if df.rdd.getNumPartitions() < cores else df


def fail_on_unknown_label(raw: DataFrame, labels: list[str], labels_file: str, label_column: str) -> None:
    """Name the first offending file, row and value (the failure path only, so a rescan is fine).

    ``raw`` must be the plain scan: input_file_name() is empty after a shuffle."""
    bad = raw.withColumn("file", F.input_file_name()).filter(~F.coalesce(F.col("label").isin(labels), F.lit(False)))
    first = bad.select("file", "label").orderBy("file").first()
    path = Path(first["file"].removeprefix("file://"))
    with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: a BOM must not rename the first column
        row = next(
            (
                i
                for i, rec in enumerate(csv.DictReader(handle), 1)
                if (rec.get(label_column) or "").strip() == (first["label"] or "")
            ),
            "?",
        )
    raise BuildError(
        f"{path}: row {row}: label {first['label']!r} is unknown ({bad.count()} such rows in the snapshot); "
        f"rule: label must be one of the {len(labels)} allowed labels in {labels_file}"
    )


def resolve_duplicates(clean: DataFrame) -> DataFrame:
    """One row per normalised key. Each distinct (text, label) is one vote; most votes wins, ties go to the smallest
    label."""
    exact = clean.groupBy("key", "text", "label", "label_id").agg(F.count(F.lit(1)).alias("copies"))
    votes = exact.groupBy("key", "label", "label_id").agg(F.count(F.lit(1)).alias("votes"), F.min("text").alias("text"))
    by_key = Window.partitionBy("key")
    ranked = (
        votes.withColumn("rank", F.row_number().over(by_key.orderBy(F.desc("votes"), F.asc("label"))))
        .withColumn("conflict", F.count(F.lit(1)).over(by_key) > 1)
        .withColumn("exact_rows", F.sum("votes").over(by_key))
    )
    return ranked.filter("rank = 1").drop("rank", "votes")


def split_column(fraction: float):
    """validation iff int(sha256(key)[:8], 16) / 2**32 < fraction: depends on the key alone, so it never moves as data
    grows."""
    bucket = F.conv(F.substring(F.sha2(F.col("key"), 256), 1, 8), 16, 10).cast("double") / float(2**32)
    return F.when(bucket < fraction, "validation").otherwise("train")


def write_split(df: DataFrame, staging: Path, split: str) -> None:
    """Spark writes one part file (sorted by key), which becomes <split>/<split>.jsonl."""
    out = staging / f"_spark_{split}"
    (
        df.filter(F.col("split") == split)
        .select("key", "text", "label", "label_id")
        .coalesce(1)
        .sortWithinPartitions("key")
        .write.json(str(out))
    )
    parts = sorted(out.glob("part-*"))
    target = split_file(staging, split)
    target.parent.mkdir()
    if parts:
        os.rename(parts[0], target)
    else:  # an empty split may leave no part file
        target.touch()
    shutil.rmtree(out)


def find_previous(store: Store, model: str, exclude: str, interval_end: str | None) -> dict[str, Any] | None:
    """The version this build's interval follows: the newest one built for an earlier interval.

    Not the most recently created one: a backfill of an old interval runs after later
    intervals were built, and must compare with what its predecessor saw."""
    manifests = [
        store.read_json(f"{key}/manifest.json")
        for key in store.list_keys(f"datasets/{model}")
        if not key.endswith(f"/{exclude}") and store.exists(f"{key}/manifest.json")
    ]
    end = _instant(interval_end)
    if end is not None:
        manifests = [
            m for m in manifests if (seen := _instant(m["lineage"].get("data_interval_end"))) is not None and seen < end
        ]
    return max(
        manifests,
        key=lambda m: (
            _instant(m["lineage"].get("data_interval_end")) or datetime.min.replace(tzinfo=UTC),
            m["created_at"],
            m["dataset_version"],
        ),
        default=None,
    )


def _instant(stamp: str | None) -> datetime | None:
    return datetime.fromisoformat(stamp) if stamp else None


def js_divergence(p: dict[str, int], q: dict[str, int]) -> float:
    """Jensen-Shannon divergence, base 2 (0 = same distribution, 1 = disjoint)."""
    tp, tq = sum(p.values()) or 1, sum(q.values()) or 1
    total = 0.0
    for label in set(p) | set(q):
        a, b = p.get(label, 0) / tp, q.get(label, 0) / tq
        m = (a + b) / 2
        total += (0.5 * a * math.log2(a / m) if a else 0.0) + (0.5 * b * math.log2(b / m) if b else 0.0)
    return min(1.0, max(0.0, total))


def compute_drift(
    spark: SparkSession, store: Store, final: DataFrame, dist: dict, previous: dict | None, scratch: Path
) -> dict[str, Any]:
    if previous is None:
        return {
            "label_js_divergence": None,
            "new_example_fraction": 1.0,
            "score": 1.0,
            "previous_version": None,
            "reason": "no previous dataset version: everything is new",
        }
    # Drift is only meaningful against intact data: the version is verified as it is read.
    prev_dir = store.materialize_version(
        f"datasets/{previous['model']}/{previous['dataset_version']}", dest=scratch / "previous"
    )
    prev_keys = spark.read.schema("key string").json([str(split_file(prev_dir, s)) for s in SPLITS])
    total = sum(sum(d.values()) for d in dist.values())
    new = final.select("key").join(prev_keys, "key", "left_anti").count()

    def overall(d: dict) -> dict:
        return {k: d["train"].get(k, 0) + d["validation"].get(k, 0) for k in set(d["train"]) | set(d["validation"])}

    js = js_divergence(overall(dist), overall(previous["label_distribution"]))
    fraction = new / total if total else 0.0
    return {
        "label_js_divergence": round(js, 6),
        "new_example_fraction": round(fraction, 6),
        "score": round(max(js, fraction), 6),
        "previous_version": previous["dataset_version"],
    }


def build(spark: SparkSession, args: argparse.Namespace, store: Store, inputs: dict[str, Any]) -> dict[str, Any]:
    labels = inputs["labels"]
    raw = read_raw(spark, inputs, args)
    label_ids = F.create_map(*[F.lit(v) for i, label in enumerate(labels) for v in (label, i)])
    label_id = F.coalesce(label_ids[F.col("label")], F.lit(-1))  # -1: unknown, reported below
    # Partition by key once: the exact/normalised dedupe and the window below then need no further shuffle.
    clean = (
        with_text_columns(spread(spark, raw).withColumn("label_id", label_id), "raw_text")
        .drop("raw_text")
        .repartition("key")
        .cache()
    )
    first = clean.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum((F.col("label_id") < 0).cast("int")).alias("unknown"),
        F.sum((F.col("norm") == "").cast("int")).alias("empty"),
    ).first()
    if first["unknown"]:
        fail_on_unknown_label(raw, labels, args.labels_file, args.label_column)
    if (
        first["rows"] != inputs["raw_manifest"]["total_rows"]
    ):  # e.g. blank lines, which Python's csv counts and Spark skips
        print(f"WARNING: Spark read {first['rows']} rows, snapshot_raw counted {inputs['raw_manifest']['total_rows']}")

    golden = with_text_columns(
        spark.read.schema("text string").json(str(inputs["golden_dir"] / "golden.jsonl")), "text"
    )
    golden_keys = golden.select("key").distinct().withColumn("contaminated", F.lit(True))
    flagged = (
        resolve_duplicates(clean.filter(F.col("norm") != ""))  # punctuation-only text has no content to learn
        .join(F.broadcast(golden_keys), "key", "left")
        .fillna(False, ["contaminated"])
        .withColumn("split", split_column(args.validation_fraction))
        .cache()
    )
    final = flagged.filter(~F.col("contaminated"))

    groups = (
        flagged.groupBy("split", "label", "contaminated")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sum(F.col("conflict").cast("int")).alias("conflicts"),
            F.sum("exact_rows").alias("exact_rows"),
        )
        .collect()
    )
    dist = {
        s: {
            g["label"]: g["n"]
            for g in sorted(groups, key=lambda g: g["label"])
            if g["split"] == s and not g["contaminated"]
        }
        for s in SPLITS
    }
    counts = {
        "raw_rows": first["rows"],
        "empty_text_removed": first["empty"],
        "after_exact_dedupe": sum(g["exact_rows"] for g in groups),
        "after_normalized_dedupe": sum(g["n"] for g in groups),
        "conflicting_labels": sum(g["conflicts"] for g in groups),
        "contaminated_removed": sum(g["n"] for g in groups if g["contaminated"]),
        **{s: sum(dist[s].values()) for s in SPLITS},
    }

    staging = inputs["scratch"] / "staging"
    staging.mkdir()
    for split in SPLITS:
        write_split(final, staging, split)
    content_sha256, files = tree_digest(staging)  # the same digest the manifest will record
    version = "ds-" + content_sha256[:16]
    key = f"datasets/{args.model}/{version}"
    previous = find_previous(
        store, args.model, exclude=version, interval_end=inputs["raw_manifest"].get("data_interval_end")
    )
    drift = compute_drift(spark, store, final, dist, previous, inputs["scratch"])
    reused = store.exists(key)
    if not reused:
        manifest = make_manifest(args, inputs, spark, version, previous, counts, dist, drift)
        try:  # write-once on every store; on S3 the manifest goes last and is the commit
            store.publish_version(key, {name: staging / name for name in files}, manifest)
        except WriteOnceError:  # a concurrent run published the same content first
            reused = True
    if reused:  # same content: never rewrite, but prove the existing version is intact and identical
        store.verify_version(key, expected_content_sha256=content_sha256)
    return {
        "dataset_version": version,
        "dataset_dir": store.uri(key),
        "previous_version": drift["previous_version"],
        "drift": drift,
        "counts": counts,
        "reused": reused,
    }


def make_manifest(args, inputs, spark, version, previous, counts, dist, drift) -> dict[str, Any]:
    raw, golden = inputs["raw_manifest"], inputs["golden_manifest"]
    return {
        "dataset_version": version,
        "model": args.model,
        "created_at": datetime.now(UTC).isoformat(),  # not part of the version hash
        "schema": {
            "fields": ["key", "text", "label", "label_id"],
            "labels": inputs["labels"],
            "labels_file": args.labels_file,
        },
        "split": {
            "rule": "validation iff int(sha256(key)[:8], 16) / 2**32 < validation_fraction",
            "validation_fraction": args.validation_fraction,
        },
        "lineage": {
            "raw_manifest": str(args.raw_manifest),
            "raw_manifest_sha256": raw.get("manifest_sha256"),
            "raw_files": [{"key": f["key"], "sha256": f["sha256"]} for f in raw["files"]],
            "data_interval_start": raw.get("data_interval_start"),
            "data_interval_end": raw.get("data_interval_end"),
            "golden_version": args.golden_version,
            "golden_content_sha256": golden.get("content_sha256"),
            "previous_version": previous["dataset_version"] if previous else None,
            "script_sha256": sha256_file(Path(__file__)),
            "spark_version": spark.version,
        },
        "counts": counts,
        "label_distribution": dist,
        "drift": drift,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    store = store_for(args.store_root, args.artifact_bucket, args.golden_bucket)
    spark = owned = None
    scratch = Path(tempfile.mkdtemp(prefix="build_dataset-"))
    try:
        inputs = load_inputs(args, store, scratch)
        spark, owned = spark_session(args.spark_master)
        result = build(spark, args, store, inputs)
    except (BuildError, RawDataError, IntegrityError, WriteOnceError) as exc:
        print(f"build_dataset FAILED: {exc}", file=sys.stderr)
        return os.EX_DATAERR  # bad input: retrying cannot help
    finally:
        if spark is not None and owned:
            spark.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    write_json_at(store, args.result_file, result)
    c, d = result["counts"], result["drift"]
    print(
        f"build_dataset: {result['dataset_version']} ({'reused' if result['reused'] else 'new'}) "
        f"raw={c['raw_rows']} exact={c['after_exact_dedupe']} normalized={c['after_normalized_dedupe']} "
        f"conflicts={c['conflicting_labels']} contaminated={c['contaminated_removed']} train={c['train']} "
        f"validation={c['validation']} drift={d['score']} vs {d['previous_version']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
