"""Training side of the text_classification task type (intent, sentiment).

Recipe: linear probe first (LP-FT, Kumar et al. 2022). With ``--trainable-layers 0`` the
encoder is frozen, its sentence embeddings are computed once, and only the head trains,
for many cheap epochs; ``--trainable-layers K`` also fine-tunes the top K encoder layers
at ``--learning-rate``. The frozen layers below never change, so their output is computed
once too (in eval mode: no dropout in them), and each epoch runs only the top K layers. Channel rows are ``{"text",
"label"}``; the label index is the
label's position in ``--labels-file``. train.py runs the loop, this module says what a
batch, a loss and a validation score are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from retrain_jobs.tasks.text_classification.model import (
    ClassifierSpec,
    LoadedClassifier,
    build_classifier,
    load_classifier,
    save_classifier,
)


@dataclass
class Args:
    """Hyperparameters of this task type, beside train.py's shared ones; each arrives as ``--key value``."""

    labels_file: str = field(default="", metadata={"help": "JSON list of labels; label_id is the index."})
    head_learning_rate: float = field(default=1e-2, metadata={"help": "Learning rate of the classification head."})
    max_seq_length: int = field(default=64, metadata={"help": "Tokens kept per example."})
    trainable_layers: int = field(default=0, metadata={"help": "Top encoder layers to fine-tune; 0 = linear probe."})


@dataclass
class Examples:
    """One split: texts and their label names, in channel order."""

    texts: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.texts)


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


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro F1 over the classes present in y_true or y_pred."""
    scores = []
    for c in np.union1d(y_true, y_pred):
        tp = np.sum((y_pred == c) & (y_true == c))
        denom = np.sum(y_pred == c) + np.sum(y_true == c)
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def length_bucketed(
    tokenizer, texts: list[str], labels: np.ndarray, batch_size: int, max_len: int
) -> list[tuple[torch.Tensor, ...]]:
    """Batches of similar lengths, padded once up front: padding stays small and an epoch only reorders them."""
    encoded = tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]
    order = np.argsort([len(ids) for ids in encoded], kind="stable")
    batches = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
            mask[row, : len(encoded[i])] = 1
        batches.append((ids, mask, torch.tensor(labels[idx])))
    return batches


class Task:
    """Encoder + linear head; a frozen encoder's features are cached, so epochs only touch the head."""

    def __init__(self, args, task_args: Args, device: torch.device, autocast) -> None:
        self.args, self.task_args, self.device, self.autocast = args, task_args, device, autocast
        self.labels = list(json.loads(Path(task_args.labels_file).read_text()))
        self.label_id = {name: i for i, name in enumerate(self.labels)}
        self.cached = task_args.trainable_layers == 0
        self.first_trained = None  # index of the lowest fine-tuned layer, set by build() when trainable_layers > 0

    def read(self, directory: str, limit: int) -> Examples:
        """A channel's examples."""
        return Examples(*read_channel(directory, limit))

    def build(self) -> nn.Module:
        """A fresh classifier on the base encoder (seeded before), its top layers trainable, on the device."""
        self.model, self.tokenizer = build_classifier(self.args.base_model, len(self.labels))
        self.model.freeze_encoder_except_top(self.task_args.trainable_layers)
        layers = len(self.model.encoder.encoder.layer)
        if not 0 <= self.task_args.trainable_layers <= layers:
            raise ValueError(
                f"trainable_layers={self.task_args.trainable_layers}: {self.args.base_model} has {layers} layers"
            )
        if self.task_args.trainable_layers:
            self.first_trained = layers - self.task_args.trainable_layers
        self.model.to(self.device)
        return self.model

    def param_groups(self) -> list[dict]:
        """The head at its own learning rate, then any trainable encoder layers."""
        groups = [{"params": self.model.head.parameters(), "lr": self.task_args.head_learning_rate}]
        encoder_params = [p for p in self.model.encoder.parameters() if p.requires_grad]
        if encoder_params:
            groups.append({"params": encoder_params, "lr": self.args.learning_rate})
        return groups

    def prepare(self, examples: Examples) -> list[tuple[torch.Tensor, ...]]:
        """A split as a list of batches: (features, y) when the encoder is frozen, else the frozen layers'
        output (hidden, layer mask, mask, y) that the top layers start from."""
        y = np.array([self.label_id[n] for n in examples.labels], dtype=np.int64)
        batches = length_bucketed(
            self.tokenizer, examples.texts, y, self.args.batch_size, self.task_args.max_seq_length
        )
        return self._features(batches) if self.cached else self._frozen_outputs(batches)

    @torch.no_grad()
    def _features(self, batches: list[tuple[torch.Tensor, ...]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        self.model.eval()
        cached = []
        for ids, mask, y in batches:
            with self.autocast():
                cached.append((self.model.embed(ids.to(self.device), mask.to(self.device)).float(), y.to(self.device)))
        return cached

    @torch.no_grad()
    def _frozen_outputs(self, batches: list[tuple[torch.Tensor, ...]]) -> list[tuple]:
        self.model.eval()
        outputs = []
        for ids, mask, y in batches:
            ids, mask = ids.to(self.device), mask.to(self.device)
            with self.autocast():
                hidden, layer_mask = self.model.hidden_before_layer(self.first_trained, ids, mask)
            outputs.append((hidden, layer_mask, mask, y.to(self.device)))
        return outputs

    def _logits(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cached:
            features, y = batch
            return self.model.head(features), y
        hidden, layer_mask, mask, y = batch
        with self.autocast():
            return self.model.head(self.model.embed_from_layer(self.first_trained, hidden, layer_mask, mask)).float(), y

    def loss(self, batch) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy of a batch, and its example count."""
        logits, y = self._logits(batch)
        return nn.functional.cross_entropy(logits, y), len(y)

    def validate(self, batches) -> dict[str, float]:
        """Validation loss, accuracy and macro F1."""
        self.model.eval()
        losses, preds, golds = [], [], []
        with torch.no_grad():
            for batch in batches:
                logits, y = self._logits(batch)
                losses.append(nn.functional.cross_entropy(logits, y, reduction="sum").item())
                preds.append(logits.argmax(-1).cpu().numpy())
                golds.append(y.cpu().numpy())
        y_true, y_pred = np.concatenate(golds), np.concatenate(preds)
        return {
            "val_loss": sum(losses) / len(y_true),
            "val_accuracy": float(np.mean(y_true == y_pred)),
            "val_macro_f1": macro_f1(y_true, y_pred),
        }

    def save(self, model_dir: Path) -> None:
        """The self-contained classifier directory (retrain_jobs.tasks.text_classification.model)."""
        spec = ClassifierSpec(
            labels=self.labels,
            max_seq_length=self.task_args.max_seq_length,
            base_model=self.args.base_model,
            trainable_layers=self.task_args.trainable_layers,
        )
        save_classifier(self.model, self.tokenizer, spec, model_dir)


def load(model_dir, expected_digest: str | None) -> LoadedClassifier:
    """A saved classifier, refused (WeightsMismatch) if its weights are not the recorded ones: serving, rollback,
    evaluation."""
    return load_classifier(model_dir, expected_digest=expected_digest)


def predict(model: LoadedClassifier, requests: list[str]) -> list[str]:
    """What a served classifier answers: the predicted label name of each text."""
    return model.predict([str(text) for text in requests])
