"""Training throughput of include/retrain_jobs/train.py.

Measured: train.py started exactly as the local runner starts it (the train_model JobSpec of
retrain.jobs, retrain.runner.command_line / job_environment, the job interpreter, the
SageMaker channel contract), fine-tuning all-MiniLM-L6-v2 with --trainable-layers 6 (every
transformer layer plus the head) on a fixed, seeded subset of data/banking77/train.csv
(512 examples quick, 2048 full) written as a jsonl channel; the intent config's batch size,
max_seq_length and learning rates; 2 torch threads; the same number of epochs.
Compared phase: the training loop only. train.py reports samples_per_second = samples /
(loop + encode) seconds; with trainable layers its "encode" phase is only the collation of
the validation batches, so its loop seconds are n_train * epochs / samples_per_second -
encode_seconds (steps are checked to equal epochs * batches). Per-epoch validation,
checkpoints, model loading and saving are outside the compared phase in both.
Each process starts after waiting (up to 20 s quick, 60 s full) for the CPUs to be quiet, and
the share of CPU other processes used meanwhile is reported: a 2-thread job on 2 cores slows
down several-fold when anything else runs.
Baseline (same run, interleaved, alternating which goes first): bench/baselines/torch_loop.py, a minimal hand-written
loop over
the same pre-padded length-bucketed batches, with the job interpreter.
Target: train.py loop samples/s >= 0.95 x the baseline's. GPU figures (bf16 samples/s,
MFU) need a GPU; this bench reports that none was present instead of a number.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import random
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from common import BENCH_DIR, PROJECT_ROOT, TRAIN_CSV, log, median, row, run_measured, settle

TARGET_RATIO = 0.95
TRAINABLE_LAYERS = 6
THREADS = 2


def write_channels(store_root: Path, version: str, n_train: int, n_validation: int) -> Path:
    """datasets/intent/<version>/{train,validation}/*.jsonl from a seeded sample of train.csv."""
    with open(TRAIN_CSV, newline="", encoding="utf-8") as handle:
        rows = [(r["text"], r["category"]) for r in csv.DictReader(handle)]
    random.Random(0).shuffle(rows)
    base = store_root / "datasets" / "intent" / version
    for split, part in (("train", rows[:n_train]), ("validation", rows[n_train : n_train + n_validation])):
        (base / split).mkdir(parents=True, exist_ok=True)
        (base / split / f"{split}.jsonl").write_text(
            "".join(json.dumps({"text": t, "label": c}) + "\n" for t, c in part)
        )
    return base


def gpu_present() -> bool:
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
    except OSError:
        return False


def run(quick: bool, work: Path) -> dict:
    from retrain.config import load_model
    from retrain.jobs import RunContext, train_model_spec
    from retrain.runner import command_line, job_environment, local_job
    from retrain.store import LocalStore

    n_train, epochs, reps = (512, 2, 3) if quick else (2048, 2, 3)
    store = LocalStore(work / "store")
    version = f"bench-{n_train}"
    data_dir = write_channels(store.root, version, n_train, 64)
    config = load_model("intent")
    hp = config.training.hyperparameters
    now = datetime.now(UTC)

    def train_py(rep: int) -> dict:
        ctx = RunContext(
            "bench_training", f"train_rep{rep}", now, now, upstream={"build_dataset": {"dataset_version": version}}
        )
        spec = local_job(train_model_spec(config, ctx), store)
        spec = dataclasses.replace(
            spec,
            arguments={
                **spec.arguments,
                "epochs": str(epochs),
                "trainable-layers": str(TRAINABLE_LAYERS),
                "threads": str(THREADS),
            },
        )
        for directory in (spec.model_dir, spec.output_dir, spec.checkpoint_dir):
            directory.mkdir(parents=True, exist_ok=True)
        measured = run_measured(command_line(spec), job_environment(spec), log_file=work / f"train_py_{rep}.log")
        summary = json.loads(spec.result_file.read_text())
        samples = summary["n_train"] * epochs
        expected_steps = epochs * math.ceil(summary["n_train"] / int(hp["batch_size"]))
        if summary["steps"] != expected_steps:
            raise RuntimeError(
                f"train.py took {summary['steps']} steps, expected {expected_steps}; the comparison would be off"
            )
        loop = samples / summary["samples_per_second"] - summary["encode_seconds"]
        return {
            "loop_seconds": loop,
            "samples_per_second": samples / loop,
            "reported_samples_per_second": summary["samples_per_second"],
            "encode_seconds": summary["encode_seconds"],
            "wall_seconds": summary["wall_seconds"],
            "process_seconds": measured["seconds"],
            "peak_rss_mb": measured["peak_rss_mb"],
            "others_cpu_share": measured["others_cpu_share"],
        }

    def baseline(rep: int) -> dict:
        from retrain.runner import LocalJob

        arguments = {
            "train-jsonl": str(data_dir / "train" / "train.jsonl"),
            "labels-file": str(PROJECT_ROOT / config.data.labels_file),
            "base-model": config.training.base_model,
            "epochs": str(epochs),
            "batch-size": str(hp["batch_size"]),
            "max-seq-length": str(hp["max_seq_length"]),
            "threads": str(THREADS),
            "learning-rate": str(hp["learning_rate"]),
            "head-learning-rate": str(hp["head_learning_rate"]),
            "weight-decay": str(hp["weight_decay"]),
            "seed": str(hp["seed"]),
        }
        # a processing-kind spec only to get the runner's job environment (PYTHONPATH, offline flags)
        spec = LocalJob(
            name="torch_loop",
            kind="processing",
            script=BENCH_DIR / "baselines" / "torch_loop.py",
            arguments=arguments,
            result_file=work / "unused",
        )
        log_file = work / f"torch_loop_{rep}.log"
        measured = run_measured(command_line(spec), job_environment(spec), log_file=log_file)
        result = json.loads(next(line for line in reversed(log_file.read_text().splitlines()) if line.startswith("{")))
        return {
            **result,
            "process_seconds": measured["seconds"],
            "peak_rss_mb": measured["peak_rss_mb"],
            "others_cpu_share": measured["others_cpu_share"],
        }

    quiet_wait = 20 if quick else 60
    ours, theirs = [], []
    for rep in range(reps):  # alternate which goes first, so neither always runs on a warmer machine
        for side, measure in ((theirs, baseline), (ours, train_py))[:: 1 if rep % 2 == 0 else -1]:
            waited = settle(quiet_wait)
            side.append({**measure(rep), "waited_for_quiet_s": waited})
        log(
            f"rep {rep + 1}/{reps}: train.py {ours[-1]['samples_per_second']:.1f} samples/s, hand-written loop "
            f"{theirs[-1]['samples_per_second']:.1f} samples/s (others used {ours[-1]['others_cpu_share']:.0%} / "
            f"{theirs[-1]['others_cpu_share']:.0%} of the CPUs)"
        )
    sps, base_sps = median([r["samples_per_second"] for r in ours]), median([r["samples_per_second"] for r in theirs])
    ratio = sps / base_sps
    others = median([r["others_cpu_share"] for r in ours + theirs])
    no_gpu = "no GPU on this machine"
    gpu = gpu_present()
    setup = (
        f"{n_train} examples x {epochs} epochs, batch {hp['batch_size']}, max_seq_length {hp['max_seq_length']}, "
        f"{THREADS} threads, all {TRAINABLE_LAYERS} layers"
    )
    rows = [
        row(
            "Training",
            f"train.py loop samples/s, CPU fp32 ({setup})",
            round(sps, 1),
            "samples/s",
            reps,
            baseline=f"hand-written loop: {base_sps:.1f} samples/s",
            ratio=f"{ratio:.3f}x",
            target=f"≥ {TARGET_RATIO}x baseline",
            met=ratio >= TARGET_RATIO,
            note=f"other processes used {others:.0%} of the CPUs meanwhile (median)",
        ),
        row(
            "Training",
            "train.py samples/s as it reports it (loop + encode)",
            round(median([r["reported_samples_per_second"] for r in ours]), 1),
            "samples/s",
            reps,
        ),
        row(
            "Training",
            "bf16 samples/s (GPU)",
            "not measured" if gpu else no_gpu,
            "",
            None,
            note="a GPU is present but this bench runs on CPU only" if gpu else "",
        ),
        row("Training", "MFU (GPU)", "not measured" if gpu else no_gpu, "", None),
    ]
    return {
        "rows": rows,
        "details": {
            "n_train": n_train,
            "epochs": epochs,
            "reps": reps,
            "trainable_layers": TRAINABLE_LAYERS,
            "threads": THREADS,
            "train_py": ours,
            "baseline": theirs,
            "median_samples_per_second": sps,
            "median_baseline_samples_per_second": base_sps,
            "ratio": ratio,
            "others_cpu_share_median": others,
            "gpu_present": gpu,
        },
    }
