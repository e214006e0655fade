"""Train a model of any task type under the SageMaker script-mode contract.

Run it locally exactly as SageMaker would (the local runner does this for you):

    SM_CHANNEL_TRAIN=.retrain/datasets/intent/<version>/train \
    SM_CHANNEL_VALIDATION=.retrain/datasets/intent/<version>/validation \
    SM_MODEL_DIR=/tmp/model SM_CHECKPOINT_DIR=/tmp/ckpt PYTHONPATH=include:plugins \
    .venv-jobs/bin/python include/retrain_jobs/train.py --base-model all-MiniLM-L6-v2 \
        --labels-file data/banking77/categories.json --epochs 30 --max-steps 50

``--task`` (default text_classification) selects ``retrain_jobs.tasks.<task>.train``: its ``Args``
(task hyperparameters, as flags beside the shared ones below) and its ``Task``, which reads
a channel, builds the model, turns a split into batches and says what a loss and a
validation score are. This file holds what every task shares: the SageMaker contract,
seeding, the step loop (accumulation, warm-up, AMP on CUDA), checkpoint/resume, MLflow
logging, the weights digest and ``training_summary.json``. Everything is seeded before the
model is built and runs with deterministic kernels, so the same data, arguments and code
give the same weights digest on CPU. A checkpoint is written each epoch to
``SM_CHECKPOINT_DIR`` (``/opt/ml/checkpoints`` on SageMaker); a restarted job resumes from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from retrain_jobs.base import CHECKED_BASE_MODELS, DataError, Refused, weights_digest


@dataclass
class TrainArgs:
    """Hyperparameters; each arrives as ``--key value`` (SageMaker) or from ``--config file.json``."""

    task: str = field(
        default="text_classification", metadata={"help": "Task type: selects retrain_jobs.tasks.<task>.train."}
    )
    base_model: str = field(
        default="all-MiniLM-L6-v2", metadata={"help": "Packaged base model name or a model directory."}
    )
    dataset_version: str = field(default="", metadata={"help": "Recorded in the summary (provenance)."})
    config_digest: str = field(
        default="",
        metadata={
            "help": "The model config's digest: provenance, and part of the checkpoint "
            "signature, so a changed config never resumes another's checkpoint."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seeds python, numpy and torch before the model is built."})
    epochs: int = field(default=30, metadata={"help": "Passes over the training data."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Learning rate of trainable encoder layers."})
    batch_size: int = field(default=32, metadata={"help": "Examples per micro-batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    warmup_ratio: float = field(default=0.06, metadata={"help": "Share of steps with linear LR warm-up."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    threads: int = field(default=0, metadata={"help": "torch CPU threads; 0 = torch's default."})
    precision: str = field(
        default="auto",
        metadata={
            "help": "auto (bf16 autocast on CUDA, fp32 on CPU), fp32, bf16 or fp16; bf16 and "
            "fp16 need a CUDA GPU (refused on CPU). A task may also load its base weights in it."
        },
    )
    max_steps: int = field(
        default=0, metadata={"help": "Stop after this many optimizer steps (smoke runs); 0 = no cap."}
    )
    max_train_samples: int = field(default=0, metadata={"help": "Use only the first N training examples; 0 = all."})
    max_eval_samples: int = field(default=0, metadata={"help": "Use only the first N validation examples; 0 = all."})
    experiment_name: str = field(
        default="retrain", metadata={"help": "MLflow experiment (when MLFLOW_TRACKING_URI is set)."}
    )
    run_name: str = field(default="", metadata={"help": "MLflow run name."})


def task_module(task: str):
    """``retrain_jobs.tasks.<task>.train``; the name was validated against the task registry with the config."""
    return importlib.import_module(f"retrain_jobs.tasks.{task}.train")


def parse_args(argv: list[str] | None = None) -> tuple[TrainArgs, object]:
    """The shared and the task's arguments, from flags like transformers' HfArgumentParser or from
    ``--config file.json``; unknown SageMaker flags are ignored."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config")
    first.add_argument("--task", default=None)
    known, _ = first.parse_known_args(argv)
    values = json.loads(Path(known.config).read_text()) if known.config else {}
    task = known.task or values.get("task") or TrainArgs.task
    schemas = (TrainArgs, task_module(task).Args)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="JSON file of arguments; flags given on the command line win.")
    for schema in schemas:
        for f in dataclasses.fields(schema):
            parser.add_argument(f"--{f.name.replace('_', '-')}", default=None, help=f.metadata["help"])
    ns, _unknown = parser.parse_known_args(argv)
    values.update({k: v for k, v in vars(ns).items() if v is not None and k != "config"})
    parsed = []
    for schema in schemas:
        types = {f.name: {"int": int, "float": float, "str": str}[f.type] for f in dataclasses.fields(schema)}
        parsed.append(schema(**{k: types[k](v) for k, v in values.items() if k in types}))
    return parsed[0], parsed[1]


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


class Precision:
    """The step loop's precision (``--precision``): ``auto`` is bf16 autocast on CUDA (fp16 with a loss scaler where
    bf16 is unsupported) and fp32 on CPU; ``fp32``, ``bf16`` or ``fp16`` choose. bf16 and fp16 need a CUDA GPU and are
    refused elsewhere, before anything is read or built."""

    DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

    def __init__(self, device: torch.device, choice: str = "auto") -> None:
        cuda = device.type == "cuda"
        if choice not in ("auto", *self.DTYPES):
            raise Refused(f"precision {choice!r}: expected auto, fp32, bf16 or fp16")
        if choice in ("bf16", "fp16") and not cuda:
            raise Refused(f"precision {choice} needs a CUDA GPU: on CPU training runs in fp32 (precision: fp32)")
        if choice == "bf16" and not torch.cuda.is_bf16_supported():
            raise Refused("precision bf16: this GPU does not support bfloat16; use fp16")
        if choice == "auto":
            choice = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
        self.device, self.name, self.dtype = device, choice, self.DTYPES[choice]
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    def autocast(self):
        return (
            torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else torch.autocast("cpu", enabled=False)
        )


def checkpoint_dir() -> Path:
    return Path(os.environ.get("SM_CHECKPOINT_DIR", "/opt/ml/checkpoints"))


def save_checkpoint(
    model, optimizer, epoch: int, step: int, history: list, signature: str, generator: torch.Generator
) -> None:
    """Trainable weights, optimizer and RNG state: enough to resume bit-for-bit."""
    directory = checkpoint_dir()
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        "signature": signature,
        "epoch": epoch,
        "step": step,
        "history": history,
        "trainable": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    tmp = directory / "last.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, directory / "last.pt")  # a crash mid-write never leaves a torn checkpoint


def load_checkpoint(model, optimizer, signature: str, generator: torch.Generator) -> tuple[int, int, list]:
    """Resume state if a checkpoint of the same job exists; else start at epoch 0."""
    path = checkpoint_dir() / "last.pt"
    if not path.is_file():
        return 0, 0, []
    state = torch.load(path, weights_only=False)
    if state["signature"] != signature:
        print(f"checkpoint {path} belongs to another job configuration; starting fresh")
        return 0, 0, []
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    print(f"resuming from {path}: epoch {state['epoch']}, step {state['step']}")
    return state["epoch"], state["step"], state["history"]


def lr_lambda(total_steps: int, warmup_ratio: float):
    warmup = max(1, int(total_steps * warmup_ratio))
    return lambda step: min((step + 1) / warmup, max(0.0, (total_steps - step) / max(1, total_steps - warmup)))


def train(args: TrainArgs, task_args) -> dict:
    """Train, save the model and ``training_summary.json``; return the summary."""
    started = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    set_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = Precision(device, args.precision)  # a GPU-only choice is refused here, before anything is read
    task = task_module(args.task).Task(args, task_args, device, precision.autocast)
    train_examples = task.read(os.environ["SM_CHANNEL_TRAIN"], args.max_train_samples)
    val_examples = task.read(os.environ["SM_CHANNEL_VALIDATION"], args.max_eval_samples)
    model = task.build()  # after set_seed: fresh layers draw from the seeded RNG
    optimizer = torch.optim.AdamW(task.param_groups(), weight_decay=args.weight_decay)
    scaler = precision.scaler  # scale(loss).backward(), step(optimizer), update()
    if hasattr(
        task, "wrap_training"
    ):  # a task's distributed engine (causal_lm_lora: DeepSpeed ZeRO-3) owns backward and step
        scaler = task.wrap_training(optimizer, scaler)
    encode_started = time.time()
    train_data, val_data = task.prepare(train_examples), task.prepare(val_examples)
    encode_seconds = time.time() - encode_started

    steps_per_epoch = math.ceil(len(train_data) / args.gradient_accumulation_steps)
    total_steps = min(args.epochs * steps_per_epoch, args.max_steps or 1 << 62)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, args.warmup_ratio))
    generator = torch.Generator().manual_seed(args.seed)
    hyperparameters = {**dataclasses.asdict(args), **dataclasses.asdict(task_args)}
    signature = json.dumps({**hyperparameters, "n_train": len(train_examples)}, sort_keys=True)
    start_epoch, step, history = load_checkpoint(model, optimizer, signature, generator)
    for _ in range(step):
        scheduler.step()

    run = MlflowRun(args, hyperparameters)
    samples, loop_seconds = 0, 0.0
    for epoch in range(start_epoch, args.epochs):
        if step >= total_steps:
            break
        model.train()
        epoch_started, losses = time.time(), []
        order = torch.randperm(len(train_data), generator=generator).tolist()  # the seeded data order
        for micro, k in enumerate(order):
            loss, n = task.loss(train_data[k])
            loss = loss / args.gradient_accumulation_steps
            scaler.scale(loss).backward()
            losses.append(loss.item() * args.gradient_accumulation_steps)
            samples += n
            if (micro + 1) % args.gradient_accumulation_steps == 0:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                step += 1
                if step >= total_steps:
                    break
        loop_seconds += time.time() - epoch_started
        metrics = {"train_loss": float(np.mean(losses)), **task.validate(val_data), "epoch": epoch + 1, "step": step}
        history.append(metrics)
        run.log_metrics(metrics, epoch + 1)
        print(json.dumps(metrics))
        save_checkpoint(model, optimizer, epoch + 1, step, history, signature, generator)

    model_dir = Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
    model.cpu()
    task.save(model_dir)
    summary = {
        "seed": args.seed,
        "dataset_version": args.dataset_version,
        "config_digest": args.config_digest,
        "base_model": args.base_model,
        "base_model_digest": CHECKED_BASE_MODELS.get(args.base_model),  # None: a directory, not a catalogued model
        "git_sha": json.loads(os.environ.get("RETRAIN_LINEAGE", "{}")).get(
            "git_sha", os.environ.get("RETRAIN_GIT_SHA", "unknown")
        ),
        "task": args.task,
        "weights_digest": weights_digest(model),
        # examples through training per second of training time, the frozen-feature pass included
        "samples_per_second": round(samples / (loop_seconds + encode_seconds), 2) if loop_seconds else None,
        "encode_seconds": round(encode_seconds, 3),
        "wall_seconds": round(time.time() - started, 3),
        "steps": step,
        "n_train": len(train_examples),
        "n_validation": len(val_examples),
        "history": history,
        "final": history[-1] if history else {},
        "hyperparameters": hyperparameters,
        "device": device.type,
        "model_dir": str(model_dir),
        "mlflow_run_id": run.run_id,
        **(
            task.summary_fields() if hasattr(task, "summary_fields") else {}
        ),  # a task's provenance (e.g. its base model's digest)
    }
    (model_dir / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    run.finish(summary, model_dir / "training_summary.json")
    return summary


class MlflowRun:
    """Logs to MLflow when MLFLOW_TRACKING_URI is set (locally SQLite, on AWS the managed server)."""

    def __init__(self, args: TrainArgs, hyperparameters: dict) -> None:
        self.run_id = None
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            return
        import mlflow

        from retrain.tracking import ensure_experiment  # artifacts under the store root, not ./mlruns

        self.mlflow = mlflow
        lineage = json.loads(os.environ.get("RETRAIN_LINEAGE", "{}"))
        experiment_id = ensure_experiment(args.experiment_name)
        mlflow.set_experiment(experiment_id=experiment_id)
        self.end_abandoned(experiment_id, lineage.get("airflow_run_id"))
        run = mlflow.start_run(run_name=args.run_name or None)
        self.run_id = run.info.run_id
        mlflow.log_params(hyperparameters)
        mlflow.set_tags(lineage)

    def end_abandoned(self, experiment_id: str, airflow_run_id: str | None) -> None:
        """An earlier try of this Airflow run that was killed (SIGKILL cannot be caught) left its MLflow
        run RUNNING for ever; this try is the only one that can know, so it marks them KILLED."""
        if not airflow_run_id:
            return
        client = self.mlflow.MlflowClient()
        escaped = airflow_run_id.replace("'", "\\'")
        for stale in client.search_runs(
            [experiment_id], f"tags.airflow_run_id = '{escaped}' and attributes.status = 'RUNNING'"
        ):
            client.set_terminated(stale.info.run_id, status="KILLED")
            print(f"MLflow run {stale.info.run_id} of an earlier try was left RUNNING: marked KILLED")

    def log_metrics(self, metrics: dict, step: int) -> None:
        if self.run_id:
            self.mlflow.log_metrics({k: v for k, v in metrics.items() if k not in ("epoch", "step")}, step=step)

    def finish(self, summary: dict, summary_path: Path) -> None:
        if self.run_id:
            self.mlflow.set_tags(
                {"weights_digest": summary["weights_digest"], "dataset_version": summary["dataset_version"]}
            )
            self.mlflow.log_metric("samples_per_second", summary["samples_per_second"] or 0.0)
            self.mlflow.log_artifact(str(summary_path))
            self.mlflow.end_run()


class Terminated(BaseException):
    """SIGTERM (a task timeout or a stopped job): unwinds like an exception so the MLflow run is ended."""


def _on_sigterm(signum, frame):
    raise Terminated()


def end_active_mlflow_run(status: str) -> None:
    """End a failed or stopped try's MLflow run as FAILED or KILLED, never leaving it RUNNING."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None and mlflow.active_run():
        mlflow.end_run(status=status)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        result = train(*parse_args())
    except Terminated:
        end_active_mlflow_run("KILLED")
        sys.exit(128 + signal.SIGTERM)
    except DataError as exc:  # raised while reading the channels, before anything is written
        end_active_mlflow_run("FAILED")
        print(f"bad input, nothing written: {exc}", file=sys.stderr)
        sys.exit(os.EX_DATAERR)
    except BaseException:
        end_active_mlflow_run("FAILED")
        raise
    print(
        f"weights_digest={result['weights_digest']} final={json.dumps(result['final'])} wall={result['wall_seconds']}s"
    )
