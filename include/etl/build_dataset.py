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

It is a cluster job: on Glue the executors run on other machines than the driver, so Spark reads
and writes only by the store's URIs (``s3://`` on Glue, paths locally), never a file the driver
copied to its own disk. Spark reads the raw files and the previous version where they are and
writes each split once under the try's own directory (``<result dir>/splits/<split>/``); the
driver reads that split back through Spark, hashes it and publishes the version through the
store. The small side inputs (the labels file, the raw and golden manifests, the golden rows)
are read through the store, which handles ``s3://`` URIs and local paths alike.

Exit status EX_DATAERR (65) with a one-line reason (file + rule) when an input breaks a rule:
the runner then fails the task without retrying, since the same input fails again. On Glue
(which passes ``--JOB_RUN_ID``) the same rejection is raised as ``BadInputError``, whose message
starts with ``BAD_INPUT_MARKER``: Glue reports an uncaught exception as the run's ErrorMessage,
and the Glue operator fails the task without retries when it finds the marker there.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from retrain.aws.names import BAD_INPUT_MARKER
from retrain.snapshot import RawDataError, decode_utf8_bytes, header_problems, verify_raw_files
from retrain.store import (
    IntegrityError,
    Store,
    WriteOnceError,
    digest_sources,
    read_json_at,
    sha256_file,
    store_for,
    write_json_at,
)

SPLITS = ("train", "validation")


def split_name(split: str) -> str:
    """<version>/<split>/<split>.jsonl: the split's directory is its training channel."""
    return f"{split}/{split}.jsonl"


WHITESPACE = r"(?U)\s+"  # (?U): Unicode whitespace, not only ASCII
PUNCTUATION = r"\p{P}+"  # Unicode punctuation; symbols such as $ and £ carry meaning and stay


class BuildError(ValueError):
    """Input breaks a rule of this job; the message names the file and the rule."""


class BadInputError(RuntimeError):
    """A rejected input on Glue: uncaught, it becomes the run's ErrorMessage, marked so the task is not retried."""


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
    parser.add_argument("--kms-key-arn", default=None, help="SSE-KMS key of what the store writes (Glue has no env)")
    parser.add_argument("--spark-master", default=os.environ.get("SPARK_MASTER", "local[2]"))
    parser.add_argument("--JOB_RUN_ID", dest="glue_job_run_id", default=None, help="set by Glue on every run")
    args, _glue_extras = parser.parse_known_args(argv)  # Glue adds --JOB_NAME, --TempDir, ...
    if not 0.0 <= args.validation_fraction < 1.0:
        parser.error("--validation-fraction must be in [0, 1)")
    return args


def load_inputs(args: argparse.Namespace, store: Store) -> dict[str, Any]:
    """Verify every input before Spark starts, so bad inputs fail in a second, not after start-up.

    Everything here is read through the store (an ``s3://`` URI on Glue, a path locally); Spark later
    reads the raw files by their store URIs, and the golden rows come from the verified bytes."""
    raw_manifest = read_json_at(store, args.raw_manifest)
    if raw_manifest.get("model") != args.model:
        raise BuildError(
            f"{args.raw_manifest}: manifest is for model {raw_manifest.get('model')!r}; rule: it must be for "
            f"{args.model!r}"
        )
    verify_raw_files(store, raw_manifest)
    for entry in raw_manifest["files"]:
        check_header(store, entry["key"], args)
    golden_manifest, golden_rows = read_golden_rows(store, args)
    return {
        "raw_manifest": raw_manifest,
        "raw_uris": [store.uri(entry["key"]) for entry in raw_manifest["files"]],
        "golden_manifest": golden_manifest,
        "golden_texts": golden_rows,
        "labels": read_labels(store, args.labels_file),
    }


def check_header(store: Store, key: str, args: argparse.Namespace) -> None:
    """The header rule, before Spark: bad data, never a crash to retry."""
    text = decode_utf8_bytes(store.read_bytes(key), store.uri(key))
    header = next(csv.reader(io.StringIO(text, newline="")), [])
    problems = header_problems(header, args.text_column, args.label_column)
    if problems:
        raise BuildError(f"{store.uri(key)}: row 1 (header): {'; '.join(problems)} (value: {header})")


def read_golden_rows(store: Store, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The golden version's manifest and texts, from the bytes the store hashed against the manifest and the pin.

    Every read of a golden set checks its hashes first, and against the config's pin: a golden file edited
    with its manifest re-hashed verifies on its own, but not against the pin."""
    key = f"golden/{args.model}/{args.golden_version}"
    manifest, files = store.read_version(key, args.expected_golden_sha256 or None)
    if "golden.jsonl" not in files:
        raise BuildError(f"{store.uri(key + '/golden.jsonl')}: missing; rule: a golden version holds golden.jsonl")
    lines = files["golden.jsonl"].decode("utf-8").splitlines()
    return manifest, [json.loads(line)["text"] for line in lines if line.strip()]


def read_labels(store: Store, labels_file: str) -> list[str]:
    """The labels file, through the store: an ``s3://`` URI in the code bundle on Glue, a path locally."""
    try:
        labels = read_json_at(store, labels_file)
    except FileNotFoundError:
        raise BuildError(f"{labels_file}: missing; rule: --labels-file names the model's labels file") from None
    if not labels or not isinstance(labels, list) or len(set(labels)) != len(labels):
        raise BuildError(f"{labels_file}: rule: the labels file is a non-empty JSON list of unique strings")
    if not all(isinstance(x, str) for x in labels):
        raise BuildError(f"{labels_file}: rule: the labels file is a non-empty JSON list of unique strings")
    return labels


LOCAL_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
"""The local Spark's driver JVM (the one JVM in local mode): C1 only, serial GC. Glue and spark-submit set their own."""


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
            # A short-lived JVM on a laptop's cores: the client compiler only and one GC thread. On 2 cores a tiny
            # build took 12 CPU-s against 19 with the JVM's defaults, and bench/etl_scale.py --quick ran 10k rows in
            # 10.2 s (12.4 s with C2 and the parallel GC) and 100k rows in 14.3 s (15.4 s).
            .config("spark.driver.extraJavaOptions", LOCAL_JVM_OPTIONS)
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
    paths = inputs["raw_uris"]
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


def fail_on_unknown_label(raw: DataFrame, store: Store, labels: list[str], args: argparse.Namespace) -> None:
    """Name the first offending file, row and value (the failure path only, so a rescan is fine).

    ``raw`` must be the plain scan: input_file_name() is empty after a shuffle. The file is read back
    through the store, by the key of the URI Spark read it from."""
    bad = raw.withColumn("file", F.input_file_name()).filter(~F.coalesce(F.col("label").isin(labels), F.lit(False)))
    first = bad.select("file", "label").orderBy("file").first()
    key = store.key_of(first["file"].removeprefix("file://"))
    text = store.read_bytes(key).decode("utf-8-sig")  # -sig: a BOM must not rename the first column
    rows = csv.DictReader(io.StringIO(text, newline=""))
    row = next(
        (i for i, rec in enumerate(rows, 1) if (rec.get(args.label_column) or "").strip() == (first["label"] or "")),
        "?",
    )
    raise BuildError(
        f"{store.uri(key)}: row {row}: label {first['label']!r} is unknown ({bad.count()} such rows in the snapshot); "
        f"rule: label must be one of the {len(labels)} allowed labels in {args.labels_file}"
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


def split_bytes(spark: SparkSession, df: DataFrame, staging_uri: str, split: str) -> bytes:
    """Spark writes the split once, one part file sorted by key, under ``staging_uri``; its bytes come back
    through Spark (the driver never reads the cluster's storage on its own), to be hashed and published."""
    out = f"{staging_uri}/{split}"
    (
        df.filter(F.col("split") == split)
        .select("key", "text", "label", "label_id")
        .coalesce(1)
        .sortWithinPartitions("key")
        .write.json(out)
    )
    lines = [row.value for row in spark.read.text(out).collect()]  # one part file: its lines in order
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


def staging_uri(store: Store, result_file: str) -> str:
    """Where Spark writes the splits: ``splits/`` beside the result file, in the try's own directory."""
    key = store.key_of(result_file)
    return store.uri(f"{key.rsplit('/', 1)[0]}/splits")


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
    spark: SparkSession, store: Store, final: DataFrame, dist: dict, previous: dict | None
) -> dict[str, Any]:
    if previous is None:
        return {
            "label_js_divergence": None,
            "new_example_fraction": 1.0,
            "score": 1.0,
            "previous_version": None,
            "reason": "no previous dataset version: everything is new",
        }
    # Drift is only meaningful against intact data: the version is verified, then Spark reads it where it is.
    key = f"datasets/{previous['model']}/{previous['dataset_version']}"
    store.verify_version(key)
    prev_keys = spark.read.schema("key string").json([store.uri(f"{key}/{split_name(s)}") for s in SPLITS])
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
        fail_on_unknown_label(raw, store, labels, args)
    if (
        first["rows"] != inputs["raw_manifest"]["total_rows"]
    ):  # e.g. blank lines, which Python's csv counts and Spark skips
        print(f"WARNING: Spark read {first['rows']} rows, snapshot_raw counted {inputs['raw_manifest']['total_rows']}")

    golden = with_text_columns(spark.createDataFrame([(t,) for t in inputs["golden_texts"]], "text string"), "text")
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

    staging = staging_uri(store, args.result_file)
    files = {split_name(split): split_bytes(spark, final, staging, split) for split in SPLITS}
    content_sha256, _ = digest_sources(files)  # the same digest the manifest will record
    version = "ds-" + content_sha256[:16]
    key = f"datasets/{args.model}/{version}"
    previous = find_previous(
        store, args.model, exclude=version, interval_end=inputs["raw_manifest"].get("data_interval_end")
    )
    drift = compute_drift(spark, store, final, dist, previous)
    reused = store.exists(key)
    if not reused:
        manifest = make_manifest(args, inputs, spark, version, previous, counts, dist, drift)
        try:  # write-once on every store; on S3 the manifest goes last and is the commit
            store.publish_version(key, files, manifest)
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
    store = store_for(args.store_root, args.artifact_bucket, args.golden_bucket, args.kms_key_arn)
    spark = owned = None
    try:
        inputs = load_inputs(args, store)
        spark, owned = spark_session(args.spark_master)
        result = build(spark, args, store, inputs)
    except (BuildError, RawDataError, IntegrityError, WriteOnceError) as exc:
        return reject(exc, args)
    finally:
        if spark is not None and owned:
            spark.stop()
    write_json_at(store, args.result_file, result)
    c, d = result["counts"], result["drift"]
    print(
        f"build_dataset: {result['dataset_version']} ({'reused' if result['reused'] else 'new'}) "
        f"raw={c['raw_rows']} exact={c['after_exact_dedupe']} normalized={c['after_normalized_dedupe']} "
        f"conflicts={c['conflicting_labels']} contaminated={c['contaminated_removed']} train={c['train']} "
        f"validation={c['validation']} drift={d['score']} vs {d['previous_version']}"
    )
    return 0


def reject(exc: Exception, args: argparse.Namespace) -> int:
    """Bad input: retrying cannot help. Exit EX_DATAERR for the local runner; on Glue, whose run reports an
    uncaught exception as its ErrorMessage but no exit code, raise it with the marker the task maps to no retry."""
    print(f"build_dataset FAILED: {exc}", file=sys.stderr)
    if args.glue_job_run_id:
        raise BadInputError(f"{BAD_INPUT_MARKER} build_dataset: {exc}") from None
    return os.EX_DATAERR


if __name__ == "__main__":
    sys.exit(main())
