"""Score the challenger and the champion on the pinned golden set (a SageMaker processing job).

    python include/eval/evaluate.py \\
        --challenger-dir /opt/ml/processing/input/challenger \\
        [--champion-dir /opt/ml/processing/input/champion --champion-version 3] \\
        --golden-dir /opt/ml/processing/input/golden \\
        --output-dir /opt/ml/processing/output \\
        --batch-size 128 --latency-requests 200 --latency-warmup 20 --latency-threads 1 \\
        [--mlflow-run-id RUN_ID] [--expected-golden-sha256 HEX]

The golden set is verified against its manifest before a byte of it is read. Both models
are scored by the same code in the same process, and the job writes ``metrics.json``
(overall, per-class and latency figures plus the paired per-example results the gate's
significance test needs) and ``report.html``. It knows nothing about Airflow.

Metric choices: labels are matched by name (the golden ``label`` field), never by id, so
two models with differently ordered label lists compare fairly. Macro F1 averages over
every label in ``labels`` (``labels=range(len(labels))``, ``zero_division=0``): a class
absent from the golden set then scores 0 for both models alike instead of silently
changing the denominator between runs; per-class ``support`` shows where that happens.
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
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from eval.report import build_report
from retrain.store import IntegrityError, verify_tree
from training.modeling import WeightsMismatch, load_classifier, unpack_model_archive

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
    return parser.parse_args(argv)


def load_golden(golden_dir: Path, expected_sha256: str | None) -> tuple[dict, list[dict]]:
    """Verify the tree against its manifest first, then read the examples in key order."""
    manifest = verify_tree(golden_dir, expected_sha256 or None)
    with open(golden_dir / "golden.jsonl", encoding="utf-8") as handle:
        examples = [json.loads(line) for line in handle if line.strip()]
    keys = [ex["key"] for ex in examples]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{golden_dir / 'golden.jsonl'}: duplicate keys")
    if not examples:
        raise ValueError(f"{golden_dir / 'golden.jsonl'}: no examples")
    return manifest, sorted(examples, key=lambda ex: ex["key"])


def label_space(label_lists: list[list[str]], golden_labels: set[str]) -> list[str]:
    """The challenger's labels, then any the champion adds; every golden label must be in it."""
    labels: list[str] = []
    for names in label_lists:
        labels += [name for name in names if name not in labels]
    unknown = sorted(golden_labels - set(labels))
    if unknown:
        raise ValueError(f"golden labels unknown to the model(s), schema mismatch: {unknown}")
    return labels


def measure_latency(model, texts: list[str], warmup: int, requests: int, threads: int) -> list[float]:
    """Single-example predict calls (tokenize + forward) in ms; warm-up calls are not timed."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # fixed thread count so runs on different hosts compare
    try:
        for i in range(warmup):
            model.predict_proba([texts[i % len(texts)]], batch_size=1)
        samples = []
        for i in range(requests):
            text = texts[i % len(texts)]
            start = time.perf_counter()
            model.predict_proba([text], batch_size=1)
            samples.append((time.perf_counter() - start) * 1000.0)
        return samples
    finally:
        torch.set_num_threads(previous)


def score_model(model, texts: list[str], y_true: np.ndarray, labels: list[str], args) -> tuple[dict, np.ndarray, list[float]]:
    """Overall, per-class and latency figures for one model, its predictions and raw latencies."""
    started = time.perf_counter()
    local_pred = model.predict_proba(texts, batch_size=args.batch_size).argmax(axis=1)
    eval_seconds = time.perf_counter() - started
    to_global = np.array([labels.index(name) for name in model.labels])  # map by name
    y_pred = to_global[local_pred]
    latencies = measure_latency(model, texts, args.latency_warmup, args.latency_requests, args.latency_threads)

    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    block = {
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "accuracy": float(np.mean(y_true == y_pred)),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
        "latency_ms": {
            "p50": float(np.percentile(latencies, 50)),
            "p99": float(np.percentile(latencies, 99)),
            "mean": float(np.mean(latencies)),
            "n": len(latencies),
        },
        "eval_seconds": round(eval_seconds, 3),
    }
    return block, y_pred, latencies


def write_atomic(path: Path, text: str) -> None:
    """Readers (the runner, the gate) never see a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def log_to_mlflow(run_id: str, metrics: dict, output_dir: Path) -> None:
    """Add the golden-set figures and both files to the training run (it already exists)."""
    import mlflow  # only this branch needs it; keeps the job usable without a tracking server
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    values = {}
    for prefix, block in (("", metrics["challenger"]), ("champion_", metrics["champion"])):
        if block:
            values.update(
                {
                    f"{prefix}golden_macro_f1": block["macro_f1"],
                    f"{prefix}golden_accuracy": block["accuracy"],
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
    manifest, examples = load_golden(args.golden_dir, args.expected_golden_sha256)

    with tempfile.TemporaryDirectory(prefix="evaluate-models-") as unpacked:  # on AWS both are model.tar.gz
        challenger_dir = unpack_model_archive(args.challenger_dir, Path(unpacked) / "challenger")
        challenger_model = load_classifier(challenger_dir, expected_digest=args.challenger_digest or None)
        champion_model = None
        if args.champion_dir:
            champion_dir = unpack_model_archive(args.champion_dir, Path(unpacked) / "champion")
            champion_model = load_classifier(champion_dir, expected_digest=args.champion_digest or None)
    labels = label_space(
        [m.labels for m in (challenger_model, champion_model) if m], {ex["label"] for ex in examples}
    )
    texts = [ex["text"] for ex in examples]
    y_true = np.array([labels.index(ex["label"]) for ex in examples])

    # Same texts, same code, same process for both models: only the weights differ.
    block, challenger_pred, challenger_lat = score_model(challenger_model, texts, y_true, labels, args)
    challenger = {"model_dir": str(args.challenger_dir), **block}
    champion, champion_pred, champion_lat = None, None, None
    if champion_model:
        block, champion_pred, champion_lat = score_model(champion_model, texts, y_true, labels, args)
        champion = {"model_dir": str(args.champion_dir), "version": args.champion_version, **block}

    metrics = {
        "golden_version": manifest.get("golden_version"),
        "golden_content_sha256": manifest["content_sha256"],
        "n_examples": len(examples),
        "labels": labels,
        "protocol": {
            "batch_size": 1,
            "warmup": args.latency_warmup,
            "requests": args.latency_requests,
            "threads": args.latency_threads,
            "timer": "time.perf_counter",
            "call": "predict_proba([text], batch_size=1): tokenize + forward + softmax",
            "examples": "first `requests` golden examples in key order, cycling when the set is smaller; warm-up uses the same sequence",
            "scoring_batch_size": args.batch_size,
            "macro_f1": "mean over all labels (labels=range(len(labels)), zero_division=0)",
        },
        "challenger": challenger,
        "champion": champion,
        "paired": {
            "keys": [ex["key"] for ex in examples],
            "y_true": y_true.tolist(),
            "challenger_pred": challenger_pred.tolist(),
            "champion_pred": champion_pred.tolist() if champion else None,
            "challenger_correct": (challenger_pred == y_true).astype(int).tolist(),
            "champion_correct": (champion_pred == y_true).astype(int).tolist() if champion else None,
        },
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(args.output_dir / "report.html", build_report(metrics, {"challenger": challenger_lat, "champion": champion_lat}))
    write_atomic(args.output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")  # last: it marks success
    if args.mlflow_run_id and os.environ.get("MLFLOW_TRACKING_URI"):
        log_to_mlflow(args.mlflow_run_id, metrics, args.output_dir)
    elif args.mlflow_run_id:
        print("MLFLOW_TRACKING_URI is not set: results not logged to MLflow")
    return metrics


def summary(metrics: dict) -> str:
    lines = [f"golden {metrics['golden_version']} ({metrics['golden_content_sha256'][:12]}…), {metrics['n_examples']} examples"]
    for role in ("challenger", "champion"):
        block = metrics[role]
        if block:
            lat = block["latency_ms"]
            lines.append(
                f"{role:<10} macro F1 {block['macro_f1']:.4f}  accuracy {block['accuracy']:.4f}  "
                f"latency p50 {lat['p50']:.2f} ms  p99 {lat['p99']:.2f} ms"
            )
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
    print(summary(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
