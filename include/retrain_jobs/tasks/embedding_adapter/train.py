"""Training side of the embedding_adapter task type: a low-rank residual adapter on a frozen sentence encoder.

A channel directory holds the ETL's split file, whose rows pair a query (``text``) with its positive
passage's id (``label``); the corpus is ``--corpus-file`` (retrain_jobs.tasks.embedding_adapter.model). The encoder
never changes, so ``prepare`` embeds every query and passage once; an epoch then only runs the
adapter over cached embeddings. The loss is InfoNCE with in-batch negatives: each query against
the distinct positive passages of its batch, at temperature ``temperature``. A passage that is
another positive of the same query is masked out rather than counted as a negative. Batches are
cut once from a permutation seeded by ``--seed`` (pairs often arrive grouped by passage, and a
batch of one passage teaches nothing); train.py reorders them each epoch with its generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from retrain_jobs.tasks.embedding_adapter.model import (
    AdapterSpec,
    Examples,
    LoadedRetriever,
    build_adapted_encoder,
    encode_frozen,
    read_channel_pairs,
    save_adapted_encoder,
)


@dataclass
class Args:
    """Hyperparameters of this task type, beside train.py's shared ones; each arrives as ``--key value``."""

    adapter_rank: int = field(default=64, metadata={"help": "Rank of the residual adapter (down: d -> rank -> d)."})
    adapter_learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate of the adapter."})
    temperature: float = field(default=0.05, metadata={"help": "InfoNCE temperature: logits are cosine / temperature."})
    max_seq_length: int = field(default=128, metadata={"help": "Tokens kept per query or passage."})
    corpus_file: str = field(
        default="", metadata={"help": "JSON lines {passage_id, text}: the passages the pairs name (data.corpus_file)."}
    )


class Task:
    """Frozen encoder, cached embeddings, trainable residual adapter."""

    def __init__(self, args, task_args: Args, device: torch.device, autocast) -> None:
        self.args, self.task_args, self.device, self.autocast = args, task_args, device, autocast

    def read(self, directory: str, limit: int) -> Examples:
        """A channel's pairs (the first ``limit`` when set), each checked against the corpus."""
        pairs, corpus = read_channel_pairs(directory, self.task_args.corpus_file)
        return Examples(pairs[:limit] if limit else pairs, corpus)

    def build(self) -> nn.Module:
        """The frozen encoder with a fresh adapter (seeded before), on the device."""
        self.model, self.tokenizer = build_adapted_encoder(self.args.base_model, self.task_args.adapter_rank)
        self.model.to(self.device)
        return self.model

    def param_groups(self) -> list[dict]:
        return [{"params": self.model.adapter.parameters(), "lr": self.task_args.adapter_learning_rate}]

    def prepare(self, examples: Examples) -> list[tuple[torch.Tensor, ...]]:
        """Batches of cached embeddings: (queries, distinct batch passages, targets, mask, corpus, corpus targets)."""
        max_len = self.task_args.max_seq_length
        passage_ids = list(examples.corpus)
        position = {pid: i for i, pid in enumerate(passage_ids)}
        with self.autocast():
            corpus = encode_frozen(
                self.model, self.tokenizer, [examples.corpus[p] for p in passage_ids], max_len, device=self.device
            )
            queries = encode_frozen(
                self.model, self.tokenizer, [p["query"] for p in examples.pairs], max_len, device=self.device
            )
        corpus, queries = corpus.to(self.device), queries.to(self.device)
        targets = np.array([position[p["passage_id"]] for p in examples.pairs])
        positives: dict[str, set[int]] = {}
        for pair, target in zip(examples.pairs, targets, strict=True):
            positives.setdefault(pair["query_id"], set()).add(int(target))
        order = np.random.default_rng(self.args.seed).permutation(len(examples.pairs))
        batches = []
        for start in range(0, len(order), self.args.batch_size):
            idx = order[start : start + self.args.batch_size]
            distinct = sorted({int(targets[i]) for i in idx})
            column = {t: j for j, t in enumerate(distinct)}
            mask = torch.zeros((len(idx), len(distinct)), dtype=torch.bool)
            for row, i in enumerate(idx):
                for other in positives[examples.pairs[i]["query_id"]] - {int(targets[i])}:
                    if other in column:
                        mask[row, column[other]] = True
            batch_targets = torch.tensor([column[int(targets[i])] for i in idx])
            batches.append(
                (
                    queries[torch.as_tensor(idx)],
                    corpus[torch.tensor(distinct)],
                    batch_targets.to(self.device),
                    mask.to(self.device),
                    corpus,
                    torch.as_tensor(targets[idx]).to(self.device),
                )
            )
        return batches

    def _logits(self, queries: torch.Tensor, passages: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.model.adapter(queries) @ self.model.adapter(passages).T / self.task_args.temperature
        return logits.masked_fill(mask, float("-inf")) if mask is not None else logits

    def loss(self, batch) -> tuple[torch.Tensor, int]:
        """InfoNCE over the batch's distinct passages, and the batch's pair count."""
        queries, passages, targets, mask, _corpus, _ = batch
        return nn.functional.cross_entropy(self._logits(queries, passages, mask), targets), len(targets)

    def validate(self, batches) -> dict[str, float]:
        """In-batch validation loss, and recall@1 against the split's whole corpus."""
        self.model.eval()
        losses, hits, n = 0.0, 0, 0
        with torch.no_grad():
            for queries, passages, targets, mask, corpus, corpus_targets in batches:
                losses += nn.functional.cross_entropy(
                    self._logits(queries, passages, mask), targets, reduction="sum"
                ).item()
                hits += int((self._logits(queries, corpus).argmax(-1) == corpus_targets).sum())
                n += len(targets)
        return {"val_loss": losses / n, "val_recall_at_1": hits / n}

    def save(self, model_dir: Path) -> None:
        spec = AdapterSpec(
            rank=self.task_args.adapter_rank,
            max_seq_length=self.task_args.max_seq_length,
            temperature=self.task_args.temperature,
            base_model=self.args.base_model,
        )
        save_adapted_encoder(self.model, self.tokenizer, spec, model_dir)


def load(model_dir, expected_digest: str | None) -> LoadedRetriever:
    """A saved adapter model, refused (WeightsMismatch) if its weights are not the recorded ones: serving, rollback,
    evaluation."""
    return LoadedRetriever(model_dir, expected_digest)


def predict(model: LoadedRetriever, requests: list[str]) -> list[list[float]]:
    """What a served embedding model answers: the adapted, L2-normalised embedding of each text."""
    return model.embed([str(text) for text in requests]).tolist()
