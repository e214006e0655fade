"""Score the challenger and the champion on the pinned golden set (a SageMaker processing job).

    python include/retrain_jobs/evaluate.py \\
        --challenger-dir /opt/ml/processing/input/challenger \\
        [--champion-dir /opt/ml/processing/input/champion --champion-version 3] \\
        --golden-dir /opt/ml/processing/input/golden \\
        --output-dir /opt/ml/processing/output \\
        --batch-size 128 --latency-requests 200 --latency-warmup 20 --latency-threads 1 \\
        [--mlflow-run-id RUN_ID] [--expected-golden-sha256 HEX] \\
        [--task text_classification --task-options '{"escalation_label": "negative"}']

The golden set is verified against its manifest before a byte of it is read. Both models
are scored by the same code in the same process, and the job writes ``metrics.json``
(overall, per-class and latency figures plus the paired per-example results the gate's
significance test needs) and ``report.html``. It knows nothing about Airflow.

``--task`` selects ``retrain_jobs.tasks.<task>.evaluate``, which loads a model, scores it and names its
metrics (classifiers: see that module for the metric choices); the golden-set check, the
latency protocol, metrics.json, MLflow logging and the report skeleton are this file's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from retrain.store import IntegrityError, verify_tree
from retrain.tasks import task_module
from retrain_jobs.base import DataError, WeightsMismatch
from retrain_jobs.report import build_report
from retrain_jobs.tasks.text_classification.model import unpack_model_archive

PROCESSING = Path("/opt/ml/processing")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--challenger-dir", type=Path, default=PROCESSING / "input" / "challenger")
    # An empty value means "no champion", so a request builder can always pass the flags.
    parser.add_argument("--champion-dir", type=lambda v: Path(v) if v else None, default=None)
    parser.add_argument("--champion-version", type=lambda v: v or None, default=None)
    # Recorded weights digests: the challenger's from its training summary, the champion's from the ledger.
    parser.add_argument("--challenger-digest", default=None)
    parser.add_argument("--champion-digest", default=None)
    parser.add_argument("--golden-dir", type=Path, default=PROCESSING / "input" / "golden")
    parser.add_argument("--output-dir", type=Path, default=PROCESSING / "output")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--latency-requests", type=int, default=200)
    parser.add_argument("--latency-warmup", type=int, default=20)
    parser.add_argument("--latency-threads", type=int, default=1)
    parser.add_argument("--mlflow-run-id", default="")
    parser.add_argument("--expected-golden-sha256", default=None)
    parser.add_argument(
        "--task", default="text_classification", help="task type: selects retrain_jobs.tasks.<task>.evaluate"
    )
    parser.add_argument(
        "--task-options", type=json.loads, default={}, help="JSON object of the task's evaluation options"
    )
    return parser.parse_args(argv)


def load_golden(golden_dir: Path, expected_sha256: str | None, task) -> tuple[dict, object]:
    """Verify the tree against its manifest first, then let the task read its files (examples in key order)."""
    manifest = verify_tree(golden_dir, expected_sha256 or None)
    return manifest, task.read_golden(golden_dir)


def measure_latency(predict_one, inputs: list, warmup: int, requests: int, threads: int) -> list[float]:
    """Single-request calls ``predict_one(input)`` in ms; warm-up calls are not timed."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # fixed thread count so runs on different hosts compare
    try:
        for i in range(warmup):
            predict_one(inputs[i % len(inputs)])
        samples = []
        for i in range(requests):
            request = inputs[i % len(inputs)]
            start = time.perf_counter()
            predict_one(request)
            samples.append((time.perf_counter() - start) * 1000.0)
        return samples
    finally:
        torch.set_num_threads(previous)


def latency_block(samples: list[float]) -> dict[str, float]:
    return {
        "p50": float(np.percentile(samples, 50)),
        "p99": float(np.percentile(samples, 99)),
        "mean": float(np.mean(samples)),
        "n": len(samples),
    }


def write_atomic(path: Path, text: str) -> None:
    """Readers (the runner, the gate) never see a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def log_to_mlflow(run_id: str, metrics: dict, output_dir: Path, headline: list[tuple]) -> None:
    """Add the golden-set figures and both files to the training run (it already exists)."""
    import mlflow  # only this branch needs it; keeps the job usable without a tracking server
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    values = {}
    for prefix, block in (("", metrics["challenger"]), ("champion_", metrics["champion"])):
        if block:
            values.update({f"{prefix}golden_{key}": block[key] for key, *_ in headline})
            values.update(
                {
                    f"{prefix}latency_p50_ms": block["latency_ms"]["p50"],
                    f"{prefix}latency_p99_ms": block["latency_ms"]["p99"],
                }
            )
    client = mlflow.MlflowClient()
    client.log_batch(run_id, metrics=[Metric(key, value, now, 0) for key, value in values.items()])
    for name in ("metrics.json", "report.html"):
        client.log_artifact(run_id, str(output_dir / name), artifact_path="evaluation")


def evaluate(args: argparse.Namespace) -> dict:
    # Drop results of an earlier attempt so a failure never leaves a stale metrics.json behind.
    for name in ("metrics.json", "report.html"):
        (args.output_dir / name).unlink(missing_ok=True)
    task = task_module("evaluate", args.task)
    manifest, examples = load_golden(args.golden_dir, args.expected_golden_sha256, task)

    with tempfile.TemporaryDirectory(prefix="evaluate-models-") as unpacked:  # on AWS both are SageMaker's model.tar.gz
        challenger_model = task.load(
            unpack_model_archive(args.challenger_dir, Path(unpacked) / "challenger"), args.challenger_digest or None
        )
        champion_model = None
        if args.champion_dir:
            champion_model = task.load(
                unpack_model_archive(args.champion_dir, Path(unpacked) / "champion"), args.champion_digest or None
            )
    # Same examples, same code, same process for both models: only the weights differ.
    scored = task.score(examples, challenger_model, champion_model, args.batch_size, args.task_options)
    requests = task.latency_requests(examples)
    latencies = {
        role: measure_latency(
            lambda request, m=model: task.predict_one(m, request),
            requests,
            args.latency_warmup,
            args.latency_requests,
            args.latency_threads,
        )
        if model
        else None
        for role, model in (("challenger", challenger_model), ("champion", champion_model))
    }
    challenger = {
        "model_dir": str(args.challenger_dir),
        **scored["blocks"]["challenger"],
        "latency_ms": latency_block(latencies["challenger"]),
    }
    champion = None
    if champion_model:
        champion = {
            "model_dir": str(args.champion_dir),
            "version": args.champion_version,
            **scored["blocks"]["champion"],
            "latency_ms": latency_block(latencies["champion"]),
        }

    metrics = {
        "golden_version": manifest.get("golden_version"),
        "golden_content_sha256": manifest["content_sha256"],
        "n_examples": len(examples),
        "task": args.task,
        **scored["fields"],
        "protocol": {
            "batch_size": 1,
            "warmup": args.latency_warmup,
            "requests": args.latency_requests,
            "threads": args.latency_threads,
            "timer": "time.perf_counter",
            "examples": "first `requests` golden examples in key order, cycling when the set is smaller; "
            "warm-up uses the same sequence",
            "scoring_batch_size": args.batch_size,
            **scored["protocol"],
        },
        "challenger": challenger,
        "champion": champion,
        "paired": scored["paired"],
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(args.output_dir / "report.html", build_report(metrics, latencies))
    write_atomic(args.output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")  # last: it marks success
    if args.mlflow_run_id and os.environ.get("MLFLOW_TRACKING_URI"):
        log_to_mlflow(args.mlflow_run_id, metrics, args.output_dir, task.summary_rows(metrics))
    elif args.mlflow_run_id:
        print("MLFLOW_TRACKING_URI is not set: results not logged to MLflow")
    return metrics


def summary(metrics: dict) -> str:
    lines = [
        f"golden {metrics['golden_version']} ({metrics['golden_content_sha256'][:12]}…), {metrics['n_examples']} "
        "examples"
    ]
    headline = task_module("evaluate", metrics["task"]).summary_rows(metrics)
    for role in ("challenger", "champion"):
        block = metrics[role]
        if block:
            lat = block["latency_ms"]
            figures = "  ".join(f"{name} {block[key]:{fmt}}" for key, name, _, fmt in headline)
            lines.append(f"{role:<10} {figures}  latency p50 {lat['p50']:.2f} ms  p99 {lat['p99']:.2f} ms")
    if not metrics["champion"]:
        lines.append("champion   none (first model of the lineage)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        metrics = evaluate(args)
    except IntegrityError as exc:
        print(f"golden set integrity check failed, refusing to evaluate: {exc}", file=sys.stderr)
        return os.EX_DATAERR  # tampered golden set: retrying cannot help
    except WeightsMismatch as exc:
        print(f"model integrity check failed, refusing to evaluate: {exc}", file=sys.stderr)
        return os.EX_DATAERR
    except DataError as exc:
        print(f"bad golden set, refusing to evaluate: {exc}", file=sys.stderr)
        return os.EX_DATAERR
    print(summary(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
