"""Train a text classifier under the SageMaker script-mode contract.

Run it locally exactly as SageMaker would (the local runner does this for you):

    SM_CHANNEL_TRAIN=.retrain/datasets/intent/<version>/train \
    SM_CHANNEL_VALIDATION=.retrain/datasets/intent/<version>/validation \
    SM_MODEL_DIR=/tmp/model SM_CHECKPOINT_DIR=/tmp/ckpt PYTHONPATH=include:plugins \
    .venv-jobs/bin/python include/training/train.py --base-model all-MiniLM-L6-v2 \
        --labels-file data/banking77/categories.json --epochs 30 --max-steps 50

Recipe: linear probe first (LP-FT, Kumar et al. 2022). With ``--trainable-layers 0`` the
encoder is frozen, its sentence embeddings are computed once, and only the head
trains, for many cheap epochs; ``--trainable-layers K`` also fine-tunes the top K
encoder layers at ``--learning-rate``. Everything is seeded before the model is built
and runs with deterministic kernels, so the same data, arguments and code give the same
weights digest on CPU. A checkpoint is written each epoch to ``SM_CHECKPOINT_DIR``
(``/opt/ml/checkpoints`` on SageMaker); a restarted job resumes from it.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from torch import nn

from training.modeling import ClassifierSpec, build_classifier, save_classifier, weights_digest


@dataclass
class TrainArgs:
    """Hyperparameters; each arrives as ``--key value`` (SageMaker) or from ``--config file.json``."""

    base_model: str = field(default="all-MiniLM-L6-v2", metadata={"help": "Packaged base model name or a model directory."})
    labels_file: str = field(default="", metadata={"help": "JSON list of labels; label_id is the index."})
    dataset_version: str = field(default="", metadata={"help": "Recorded in the summary (provenance)."})
    config_digest: str = field(default="", metadata={"help": "The model config's digest: provenance, and part of the checkpoint "
                                                              "signature, so a changed config never resumes another's checkpoint."})
    seed: int = field(default=42, metadata={"help": "Seeds python, numpy and torch before the model is built."})
    epochs: int = field(default=30, metadata={"help": "Passes over the training data."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Learning rate of trainable encoder layers."})
    head_learning_rate: float = field(default=1e-2, metadata={"help": "Learning rate of the classification head."})
    batch_size: int = field(default=32, metadata={"help": "Examples per micro-batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    max_seq_length: int = field(default=64, metadata={"help": "Tokens kept per example."})
    warmup_ratio: float = field(default=0.06, metadata={"help": "Share of steps with linear LR warm-up."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    trainable_layers: int = field(default=0, metadata={"help": "Top encoder layers to fine-tune; 0 = linear probe."})
    threads: int = field(default=0, metadata={"help": "torch CPU threads; 0 = torch's default."})
    max_steps: int = field(default=0, metadata={"help": "Stop after this many optimizer steps (smoke runs); 0 = no cap."})
    max_train_samples: int = field(default=0, metadata={"help": "Use only the first N training examples; 0 = all."})
    max_eval_samples: int = field(default=0, metadata={"help": "Use only the first N validation examples; 0 = all."})
    experiment_name: str = field(default="retrain", metadata={"help": "MLflow experiment (when MLFLOW_TRACKING_URI is set)."})
    run_name: str = field(default="", metadata={"help": "MLflow run name."})


def parse_args(argv: list[str] | None = None) -> TrainArgs:
    """Flags from the dataclass fields, like transformers' HfArgumentParser; unknown SageMaker flags are ignored."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="JSON file of arguments; flags given on the command line win.")
    for f in dataclasses.fields(TrainArgs):
        parser.add_argument(f"--{f.name.replace('_', '-')}", default=None, help=f.metadata["help"])
    ns, _unknown = parser.parse_known_args(argv)
    values = json.loads(Path(ns.config).read_text()) if ns.config else {}
    values.update({k: v for k, v in vars(ns).items() if v is not None and k != "config"})
    types = {f.name: {"int": int, "float": float, "str": str}[f.type] for f in dataclasses.fields(TrainArgs)}
    return TrainArgs(**{k: types[k](v) for k, v in values.items() if k in types})


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def read_channel(directory: str, limit: int) -> tuple[list[str], list[str]]:
    """Texts and labels of every ``*.jsonl`` file in a channel directory, in file then line order."""
    texts, labels = [], []
    for path in sorted(Path(directory).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts.append(row["text"])
            labels.append(row["label"])
    if not texts:
        raise SystemExit(f"{directory}: channel holds no examples (*.jsonl)")
    return (texts[:limit], labels[:limit]) if limit else (texts, labels)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int) -> float:
    """Macro F1 over the classes present in y_true or y_pred."""
    scores = []
    for c in np.union1d(y_true, y_pred):
        tp = np.sum((y_pred == c) & (y_true == c))
        denom = np.sum(y_pred == c) + np.sum(y_true == c)
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores)) if scores else 0.0


class Batches:
    """Length-bucketed batches in a seeded order: padding stays small and runs repeat exactly.

    Batches are padded once, up front; an epoch only reorders them, so the step loop does
    no Python-side tensor building.
    """

    def __init__(self, tokenizer, texts: list[str], labels: np.ndarray, batch_size: int, max_len: int) -> None:
        encoded = tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]
        order = np.argsort([len(ids) for ids in encoded], kind="stable")
        self.chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        self.batches = [self.collate(encoded, labels, idx, tokenizer.pad_token_id) for idx in self.chunks]

    @staticmethod
    def collate(encoded: list[list[int]], labels: np.ndarray, idx: np.ndarray, pad_id: int) -> tuple[torch.Tensor, ...]:
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
            mask[row, : len(encoded[i])] = 1
        return ids, mask, torch.tensor(labels[idx])

    def epoch(self, generator: torch.Generator | None):
        order = torch.randperm(len(self.batches), generator=generator).tolist() if generator else range(len(self.batches))
        for k in order:
            yield self.batches[k]


class Trainer:
    """The training loop: frozen-feature cache, accumulation, AMP on CUDA, checkpoints."""

    def __init__(self, args: TrainArgs, model, tokenizer, labels: list[str], device: torch.device) -> None:
        self.args, self.model, self.labels, self.device = args, model, labels, device
        model.freeze_encoder_except_top(args.trainable_layers)
        model.to(device)
        groups = [{"params": model.head.parameters(), "lr": args.head_learning_rate}]
        encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
        if encoder_params:
            groups.append({"params": encoder_params, "lr": args.learning_rate})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=args.weight_decay)
        self.tokenizer = tokenizer
        self.amp_dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else (torch.float16 if device.type == "cuda" else None)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else torch.autocast("cpu", enabled=False)

    @torch.no_grad()
    def cache_features(self, batches: Batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Frozen encoder: embed every batch once; epochs then only touch the head."""
        self.model.eval()
        cached = []
        for ids, mask, y in batches.epoch(None):
            with self._autocast():
                cached.append((self.model.embed(ids.to(self.device), mask.to(self.device)).float(), y.to(self.device)))
        return cached

    def logits_and_labels(self, batch, cached: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if cached:
            features, y = batch
            return self.model.head(features), y
        ids, mask, y = batch
        with self._autocast():
            return self.model(ids.to(self.device), mask.to(self.device)).float(), y.to(self.device)

    def evaluate(self, data, cached: bool) -> dict[str, float]:
        self.model.eval()
        losses, preds, golds = [], [], []
        with torch.no_grad():
            for batch in data:
                logits, y = self.logits_and_labels(batch, cached)
                losses.append(nn.functional.cross_entropy(logits, y, reduction="sum").item())
                preds.append(logits.argmax(-1).cpu().numpy())
                golds.append(y.cpu().numpy())
        y_true, y_pred = np.concatenate(golds), np.concatenate(preds)
        return {
            "val_loss": sum(losses) / len(y_true),
            "val_accuracy": float(np.mean(y_true == y_pred)),
            "val_macro_f1": macro_f1(y_true, y_pred, len(self.labels)),
        }


def checkpoint_dir() -> Path:
    return Path(os.environ.get("SM_CHECKPOINT_DIR", "/opt/ml/checkpoints"))


def save_checkpoint(trainer: Trainer, epoch: int, step: int, history: list, signature: str, generator: torch.Generator) -> None:
    """Trainable weights, optimizer and RNG state: enough to resume bit-for-bit."""
    directory = checkpoint_dir()
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        "signature": signature,
        "epoch": epoch,
        "step": step,
        "history": history,
        "trainable": {n: p.detach().cpu() for n, p in trainer.model.named_parameters() if p.requires_grad},
        "optimizer": trainer.optimizer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    tmp = directory / "last.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, directory / "last.pt")  # a crash mid-write never leaves a torn checkpoint


def load_checkpoint(trainer: Trainer, signature: str, generator: torch.Generator) -> tuple[int, int, list]:
    """Resume state if a checkpoint of the same job exists; else start at epoch 0."""
    path = checkpoint_dir() / "last.pt"
    if not path.is_file():
        return 0, 0, []
    state = torch.load(path, weights_only=False)
    if state["signature"] != signature:
        print(f"checkpoint {path} belongs to another job configuration; starting fresh")
        return 0, 0, []
    params = dict(trainer.model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    trainer.optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    print(f"resuming from {path}: epoch {state['epoch']}, step {state['step']}")
    return state["epoch"], state["step"], state["history"]


def lr_lambda(total_steps: int, warmup_ratio: float):
    warmup = max(1, int(total_steps * warmup_ratio))
    return lambda step: min((step + 1) / warmup, max(0.0, (total_steps - step) / max(1, total_steps - warmup)))


def train(args: TrainArgs) -> dict:
    """Train, save the model and ``training_summary.json``; return the summary."""
    started = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    set_seed(args.seed)
    labels = list(json.loads(Path(args.labels_file).read_text()))
    label_id = {name: i for i, name in enumerate(labels)}
    train_texts, train_labels = read_channel(os.environ["SM_CHANNEL_TRAIN"], args.max_train_samples)
    val_texts, val_labels = read_channel(os.environ["SM_CHANNEL_VALIDATION"], args.max_eval_samples)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = build_classifier(args.base_model, len(labels))
    trainer = Trainer(args, model, tokenizer, labels, device)
    to_ids = lambda names: np.array([label_id[n] for n in names], dtype=np.int64)  # noqa: E731
    train_batches = Batches(tokenizer, train_texts, to_ids(train_labels), args.batch_size, args.max_seq_length)
    val_batches = Batches(tokenizer, val_texts, to_ids(val_labels), args.batch_size, args.max_seq_length)

    cached = args.trainable_layers == 0
    encode_started = time.time()
    train_cache = trainer.cache_features(train_batches) if cached else None
    val_data = trainer.cache_features(val_batches) if cached else list(val_batches.epoch(None))
    encode_seconds = time.time() - encode_started

    steps_per_epoch = math.ceil(len(train_batches.chunks) / args.gradient_accumulation_steps)
    total_steps = min(args.epochs * steps_per_epoch, args.max_steps or 1 << 62)
    scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lr_lambda(total_steps, args.warmup_ratio))
    generator = torch.Generator().manual_seed(args.seed)
    signature = json.dumps({**dataclasses.asdict(args), "n_train": len(train_texts)}, sort_keys=True)
    start_epoch, step, history = load_checkpoint(trainer, signature, generator)
    for _ in range(step):
        scheduler.step()

    run = MlflowRun(args)
    samples, loop_seconds = 0, 0.0
    for epoch in range(start_epoch, args.epochs):
        if step >= total_steps:
            break
        trainer.model.train()
        epoch_started, losses = time.time(), []
        order = torch.randperm(len(train_cache), generator=generator).tolist() if cached else None
        batches = (train_cache[k] for k in order) if cached else train_batches.epoch(generator)
        for micro, batch in enumerate(batches):
            logits, y = trainer.logits_and_labels(batch, cached)
            loss = nn.functional.cross_entropy(logits, y) / args.gradient_accumulation_steps
            trainer.scaler.scale(loss).backward()
            losses.append(loss.item() * args.gradient_accumulation_steps)
            samples += len(y)
            if (micro + 1) % args.gradient_accumulation_steps == 0:
                trainer.scaler.step(trainer.optimizer)
                trainer.scaler.update()
                trainer.optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                step += 1
                if step >= total_steps:
                    break
        loop_seconds += time.time() - epoch_started
        metrics = {"train_loss": float(np.mean(losses)), **trainer.evaluate(val_data, cached), "epoch": epoch + 1, "step": step}
        history.append(metrics)
        run.log_metrics(metrics, epoch + 1)
        print(json.dumps(metrics))
        save_checkpoint(trainer, epoch + 1, step, history, signature, generator)

    model_dir = Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
    spec = ClassifierSpec(labels=labels, max_seq_length=args.max_seq_length, base_model=args.base_model, trainable_layers=args.trainable_layers)
    save_classifier(trainer.model.cpu(), tokenizer, spec, model_dir)
    summary = {
        "seed": args.seed,
        "dataset_version": args.dataset_version,
        "config_digest": args.config_digest,
        "base_model": args.base_model,
        "git_sha": json.loads(os.environ.get("RETRAIN_LINEAGE", "{}")).get("git_sha", os.environ.get("RETRAIN_GIT_SHA", "unknown")),
        "weights_digest": weights_digest(trainer.model),
        # examples through training per second of training time, the frozen-feature pass included
        "samples_per_second": round(samples / (loop_seconds + encode_seconds), 2) if loop_seconds else None,
        "encode_seconds": round(encode_seconds, 3),
        "wall_seconds": round(time.time() - started, 3),
        "steps": step,
        "n_train": len(train_texts),
        "n_validation": len(val_texts),
        "history": history,
        "final": history[-1] if history else {},
        "hyperparameters": dataclasses.asdict(args),
        "device": device.type,
        "model_dir": str(model_dir),
        "mlflow_run_id": run.run_id,
    }
    (model_dir / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    run.finish(summary, model_dir / "training_summary.json")
    return summary


class MlflowRun:
    """Logs to MLflow when MLFLOW_TRACKING_URI is set (locally SQLite, on AWS the managed server)."""

    def __init__(self, args: TrainArgs) -> None:
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
        mlflow.log_params(dataclasses.asdict(args))
        mlflow.set_tags(lineage)

    def end_abandoned(self, experiment_id: str, airflow_run_id: str | None) -> None:
        """An earlier try of this Airflow run that was killed (SIGKILL cannot be caught) left its MLflow
        run RUNNING for ever; this try is the only one that can know, so it marks them KILLED."""
        if not airflow_run_id:
            return
        client = self.mlflow.MlflowClient()
        escaped = airflow_run_id.replace("'", "\\'")
        for stale in client.search_runs([experiment_id], f"tags.airflow_run_id = '{escaped}' and attributes.status = 'RUNNING'"):
            client.set_terminated(stale.info.run_id, status="KILLED")
            print(f"MLflow run {stale.info.run_id} of an earlier try was left RUNNING: marked KILLED")

    def log_metrics(self, metrics: dict, step: int) -> None:
        if self.run_id:
            self.mlflow.log_metrics({k: v for k, v in metrics.items() if k not in ("epoch", "step")}, step=step)

    def finish(self, summary: dict, summary_path: Path) -> None:
        if self.run_id:
            self.mlflow.set_tags({"weights_digest": summary["weights_digest"], "dataset_version": summary["dataset_version"]})
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
        result = train(parse_args())
    except Terminated:
        end_active_mlflow_run("KILLED")
        sys.exit(128 + signal.SIGTERM)
    except BaseException:
        end_active_mlflow_run("FAILED")
        raise
    print(f"weights_digest={result['weights_digest']} final={json.dumps(result['final'])} wall={result['wall_seconds']}s")
