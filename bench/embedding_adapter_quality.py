"""The embedding adapter on the full data/retrieval set: the golden figures of the adapter beside the frozen encoder.

    source scripts/env.sh && python bench/embedding_adapter_quality.py [--epochs 10] [--threads 1]

Stages training channels from data/retrieval (10% of the training pairs, by a hash of the
query, as validation), runs include/retrain_jobs/train.py with the job interpreter exactly as the
local runner does, publishes data/retrieval's golden queries, corpus and qrels through the store,
and runs include/retrain_jobs/evaluate.py on them. Prints one JSON line: train and evaluate wall seconds,
and recall@1/5/10, MRR@10, nDCG@10 for the adapter and the frozen encoder from the same run.
Target: the adapter beats the frozen encoder on recall@10. Not wired into bench/run.py
yet: the model has no config and DAG (docs/task-types.md, "Not done yet").
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from retrain.paths import job_python  # noqa: E402
from retrain.runner import (  # noqa: E402
    LocalJob,  # noqa: E402
    command_line,
    job_environment,
)
from retrain.store import LocalStore, write_manifest_and_publish  # noqa: E402

DATA = ROOT / "data" / "retrieval"


def stage(root: Path) -> dict[str, Path]:
    splits = {"train": [], "validation": []}
    with open(DATA / "train.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            key = hashlib.sha256(row["query"].encode()).hexdigest()
            split = "validation" if int(key[:8], 16) % 10 == 0 else "train"
            splits[split].append({"key": key[:16], "text": row["query"], "label": row["passage_id"]})
    for (
        split,
        pairs,
    ) in splits.items():  # the ETL's split layout: <split>/<split>.jsonl, text = query, label = passage id
        (root / split).mkdir(parents=True)
        (root / split / f"{split}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    store = LocalStore(root / "store")
    staging = store.staging_dir("golden/embedding_adapter/v1")
    for name in ("golden.jsonl", "corpus.jsonl", "qrels.jsonl"):
        (staging / name).write_bytes((DATA / name).read_bytes())
    write_manifest_and_publish(
        store, staging, "golden/embedding_adapter/v1", {"golden_version": "v1", "model": "embedding_adapter"}
    )
    return {
        "train": root / "train",
        "validation": root / "validation",
        "golden": store.path("golden/embedding_adapter/v1"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", default="10")
    parser.add_argument("--threads", default="1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-adapter-") as tmp:
        root = Path(tmp)
        paths = stage(root)
        spec = LocalJob(
            name="train_model",
            kind="training",
            script=ROOT / "include" / "retrain_jobs" / "train.py",
            arguments={
                "task": "embedding_adapter",
                "epochs": args.epochs,
                "batch-size": "64",
                "threads": args.threads,
                "adapter-rank": "64",
                "adapter-learning-rate": "0.001",
                "temperature": "0.05",
                "seed": "42",
                "corpus-file": str(DATA / "corpus.jsonl"),
            },
            channels={"train": paths["train"], "validation": paths["validation"]},
            model_dir=root / "model",
            output_dir=root / "output",
            checkpoint_dir=root / "ckpt",
            result_file=root / "model" / "training_summary.json",
        )
        env = job_environment(spec)
        env.pop("MLFLOW_TRACKING_URI", None)
        started = time.time()
        for d in (spec.model_dir, spec.checkpoint_dir):
            d.mkdir(parents=True)
        subprocess.run(command_line(spec), env=env, check=True, stdout=subprocess.DEVNULL)
        train_seconds = time.time() - started
        summary = json.loads(spec.result_file.read_text())
        started = time.time()
        subprocess.run(
            [
                str(job_python()),
                str(ROOT / "include" / "retrain_jobs" / "evaluate.py"),
                "--task",
                "embedding_adapter",
                "--challenger-dir",
                str(root / "model"),
                "--golden-dir",
                str(paths["golden"]),
                "--output-dir",
                str(root / "eval"),
                "--batch-size",
                "128",
                "--latency-requests",
                "200",
                "--latency-warmup",
                "20",
            ],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        metrics = json.loads((root / "eval" / "metrics.json").read_text())
    keys = ("recall_at_1", "recall_at_5", "recall_at_10", "mrr_at_10", "ndcg_at_10")
    print(
        json.dumps(
            {
                "train_seconds": round(train_seconds, 1),
                "encode_seconds": summary["encode_seconds"],
                "evaluate_seconds": round(time.time() - started, 1),
                "n_train": summary["n_train"],
                "golden_queries": metrics["n_examples"],
                "passages": metrics["n_passages"],
                "adapter": {k: round(metrics["challenger"][k], 4) for k in keys},
                "frozen": {k: round(metrics["baseline"][k], 4) for k in keys},
                "latency_p50_ms": round(metrics["challenger"]["latency_ms"]["p50"], 2),
                "weights_digest": summary["weights_digest"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
