"""Training side of the cross_encoder_reranking task type: a MiniLM cross-encoder over first-stage hard negatives.

A channel holds the ETL's split file (text = query, label = positive passage id), read against
``--corpus-file`` like embedding_adapter (retrain_jobs.tasks.embedding_adapter.model). ``prepare`` runs the first stage
once (the
frozen packaged MiniLM bi-encoder, retrain_jobs.tasks.cross_encoder_reranking.model.FirstStage) over the corpus and the
queries; each
query's group is its positive and the ``negatives`` passages the first stage ranks highest among the others
(hard negatives), with their first-stage cosines. The frozen bottom of the cross-encoder runs once per pair
here too (its output is cached), so an epoch runs only the trainable layers. The loss is listwise: softmax
cross-entropy of the positive over its group's served scores (first_stage_weight × cosine / temperature +
logit). At most ``max_queries`` training queries (``max_validation_queries`` for validation) are kept, a
subset drawn with ``--seed``, which bounds the training time. train.py reorders the batches each epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from retrain_jobs.tasks.cross_encoder_reranking.model import (
    FirstStage,
    LoadedReranker,
    RerankerSpec,
    build_cross_encoder,
    save_cross_encoder,
    tokenize_pairs,
)
from retrain_jobs.tasks.embedding_adapter.model import Examples, read_channel_pairs


@dataclass
class Args:
    """Hyperparameters of this task type, beside train.py's shared ones; each arrives as ``--key value``."""

    negatives: int = field(
        default=3,
        metadata={"help": "Hard negatives per query: the first stage's best passages other than the positive."},
    )
    frozen_layers: int = field(
        default=3,
        metadata={
            "help": "Bottom transformer layers that never train (their output is cached); embeddings are frozen too."
        },
    )
    head_learning_rate: float = field(
        default=1e-3,
        metadata={"help": "Learning rate of the pooler and the one-logit head (learning_rate is the layers')."},
    )
    first_stage_weight: float = field(
        default=1.0, metadata={"help": "Weight of cosine / temperature in the served score; 0 = pure cross-encoder."}
    )
    temperature: float = field(
        default=0.05, metadata={"help": "The first-stage cosine enters the score as cosine / temperature."}
    )
    max_seq_length: int = field(
        default=64, metadata={"help": "Tokens kept per (query, passage) pair; the passage is cut first."}
    )
    max_queries: int = field(default=0, metadata={"help": "Training queries kept (a seeded subset); 0 = all."})
    max_validation_queries: int = field(
        default=0, metadata={"help": "Validation queries kept (a seeded subset); 0 = all."}
    )
    corpus_file: str = field(
        default="", metadata={"help": "JSON lines {passage_id, text}: the passages the pairs name (data.corpus_file)."}
    )


class Task:
    """First-stage hard negatives, a cached frozen bottom, trainable top layers and head, listwise loss."""

    def __init__(self, args, task_args: Args, device: torch.device, autocast) -> None:
        self.args, self.task_args, self.device, self.autocast = args, task_args, device, autocast
        self._cap = task_args.max_queries

    def read(self, directory: str, limit: int) -> Examples:
        """A channel's pairs, each checked against the corpus; then ``limit`` (the first N), then the seeded query
        cap."""
        pairs, corpus = read_channel_pairs(directory, self.task_args.corpus_file)
        pairs = pairs[:limit] if limit else pairs
        cap, self._cap = self._cap, self.task_args.max_validation_queries  # train.py reads train, then validation
        if cap and len(pairs) > cap:
            keep = np.sort(np.random.default_rng(self.args.seed).permutation(len(pairs))[:cap])
            pairs = [pairs[i] for i in keep]
        return Examples(pairs, corpus)

    def build(self) -> nn.Module:
        self.model, self.tokenizer = build_cross_encoder(self.args.base_model, self.task_args.frozen_layers)
        self.model.to(self.device)
        return self.model

    def param_groups(self) -> list[dict]:
        head = [*self.model.scorer.bert.pooler.parameters(), *self.model.scorer.classifier.parameters()]
        layers = [
            p
            for layer in self.model.scorer.bert.encoder.layer[self.task_args.frozen_layers :]
            for p in layer.parameters()
        ]
        return [
            {"params": layers, "lr": self.args.learning_rate},
            {"params": head, "lr": self.task_args.head_learning_rate},
        ]

    def groups(self, examples: Examples) -> tuple[list[list[str]], np.ndarray]:
        """Per pair: [positive, hard negatives...] passage ids and their first-stage cosines (pairs × (1 +
        negatives))."""
        passage_ids = list(examples.corpus)
        n = min(self.task_args.negatives, len(passage_ids) - 1)
        first = FirstStage(self.args.base_model, self.task_args.max_seq_length)
        corpus = first.embed([examples.corpus[p] for p in passage_ids])
        cosines = (first.embed([p["query"] for p in examples.pairs]) @ corpus.T).numpy().astype(np.float64)
        position = {pid: i for i, pid in enumerate(passage_ids)}
        positives: dict[str, set[int]] = {}
        for pair in examples.pairs:
            positives.setdefault(pair["query_id"], set()).add(position[pair["passage_id"]])
        ids, scores = [], np.zeros((len(examples.pairs), 1 + n))
        for row, pair in enumerate(examples.pairs):
            ranked = [
                int(j) for j in np.argsort(-cosines[row], kind="stable") if int(j) not in positives[pair["query_id"]]
            ][:n]
            chosen = [position[pair["passage_id"]], *ranked]
            ids.append([passage_ids[j] for j in chosen])
            scores[row] = cosines[row, chosen]
        return ids, scores

    def prepare(self, examples: Examples) -> list[tuple]:
        """Batches of ``batch_size`` queries: the frozen bottom's output for every pair of their groups, its layer
        mask, and the first-stage cosines (queries × group); the positive is column 0. Cut once from a seeded
        permutation."""
        ids, cosines = self.groups(examples)
        group = cosines.shape[1]
        order = np.random.default_rng(self.args.seed).permutation(len(examples.pairs))
        batches = []
        self.model.eval()
        with torch.no_grad(), self.autocast():
            for start in range(0, len(order), self.args.batch_size):
                idx = order[start : start + self.args.batch_size]
                queries = [examples.pairs[i]["query"] for i in idx for _ in range(group)]
                passages = [examples.corpus[pid] for i in idx for pid in ids[i]]
                tokens = {
                    k: v.to(self.device)
                    for k, v in tokenize_pairs(self.tokenizer, queries, passages, self.task_args.max_seq_length).items()
                }
                hidden, mask = self.model.hidden_before_layer(tokens)
                batches.append((hidden, mask, torch.as_tensor(cosines[idx], dtype=torch.float32).to(self.device)))
        return batches

    def _scores(self, batch) -> torch.Tensor:
        hidden, mask, cosines = batch
        logits = self.model.logits_from_layer(hidden, mask).float().view(cosines.shape)
        return self.task_args.first_stage_weight * cosines / self.task_args.temperature + logits

    def loss(self, batch) -> tuple[torch.Tensor, int]:
        """Listwise softmax cross-entropy of the positive (column 0) over each query's group, and the query count."""
        scores = self._scores(batch)
        return nn.functional.cross_entropy(
            scores, torch.zeros(len(scores), dtype=torch.long, device=scores.device)
        ), len(scores)

    def validate(self, batches) -> dict[str, float]:
        """Validation loss, and the share of queries whose positive tops its group (val_accuracy_at_1)."""
        self.model.eval()
        losses, hits, n = 0.0, 0, 0
        with torch.no_grad():
            for batch in batches:
                scores = self._scores(batch)
                target = torch.zeros(len(scores), dtype=torch.long, device=scores.device)
                losses += nn.functional.cross_entropy(scores, target, reduction="sum").item()
                hits += int((scores.argmax(-1) == 0).sum())
                n += len(scores)
        return {"val_loss": losses / n, "val_accuracy_at_1": hits / n}

    def save(self, model_dir: Path) -> None:
        spec = RerankerSpec(
            max_seq_length=self.task_args.max_seq_length,
            first_stage_weight=self.task_args.first_stage_weight,
            temperature=self.task_args.temperature,
            frozen_layers=self.task_args.frozen_layers,
            base_model=self.args.base_model,
        )
        save_cross_encoder(self.model, self.tokenizer, spec, model_dir)


def load(model_dir, expected_digest: str | None) -> LoadedReranker:
    """A saved reranker, refused (WeightsMismatch) if its weights are not the recorded ones: serving, rollback,
    evaluation."""
    return LoadedReranker(model_dir, expected_digest)


def predict(model: LoadedReranker, requests: list[dict]) -> list[dict]:
    """What a served reranker answers: per request {"query", "candidates": [{"passage_id", "text", "score"}]} the
    candidates'
    ids and served scores, best first."""
    return [model.rerank(str(r["query"]), list(r["candidates"])) for r in requests]
