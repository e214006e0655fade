"""The model and data files of the cross_encoder_reranking task type, shared by its training and evaluation modules.

A cross-encoder reads a (query, passage) pair and returns one logit. It starts from the packaged MiniLM
(``BertForSequenceClassification.from_pretrained(<minilm>, num_labels=1)``: only the head is new; no
cross-encoder ships in a pip package). It reranks a fixed candidate list that a first-stage retriever
produced with a cosine score per candidate, and the served score is

    score(q, p) = first_stage_weight * cosine(q, p) / temperature + logit(q, p)

with the head zero-initialised, so an untrained reranker reproduces the first-stage order exactly and
training only moves away from it (``first_stage_weight: 0`` gives a pure cross-encoder). The token
embeddings and the bottom ``frozen_layers`` transformer layers never train, so training caches their
output once per pair (``hidden_before_layer``) and runs only the layers above it.

The first stage is the frozen packaged MiniLM as a bi-encoder (mean pooling, L2 norm), the
embedding_adapter task type's baseline; ``FirstStage`` computes it for training (hard negatives and
their cosines). Evaluation needs no first stage: the golden version carries its candidates.

A saved model directory is self-contained:

    scorer/          Hugging Face BertForSequenceClassification weights, config and tokenizer
    reranker.json    max_seq_length, first_stage_weight, temperature, frozen_layers, base model

Data files (JSON lines; a bad row is a RetrievalDataError naming the file, the line and the rule): the
training side reads the same channel pairs and corpus as embedding_adapter
(retrain_jobs.tasks.embedding_adapter.model); a golden
directory holds embedding_adapter's three files and ``candidates.jsonl`` {"query_id", "passage_ids": [k],
"scores": [k]}: every golden query's first-stage top k, best first.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, BertForSequenceClassification

from retrain.tasks.cross_encoder_reranking import candidate_list_problem
from retrain_jobs.base import resolve_base_model, verified_digest
from retrain_jobs.tasks.embedding_adapter.model import RetrievalDataError, _rows


@dataclass(frozen=True)
class RerankerSpec:
    """What reranker.json records beside the weights."""

    max_seq_length: int
    first_stage_weight: float
    temperature: float
    frozen_layers: int
    base_model: str


class _LayerReached(Exception):
    """Stops the encoder's forward pass at the layer ``hidden_before_layer`` wants."""


class CrossEncoder(nn.Module):
    """BertForSequenceClassification (one logit) whose embeddings and bottom ``frozen_layers`` layers are frozen."""

    def __init__(self, scorer: BertForSequenceClassification, frozen_layers: int) -> None:
        super().__init__()
        self.scorer = scorer
        self.frozen_layers = frozen_layers
        frozen = [scorer.bert.embeddings, *scorer.bert.encoder.layer[:frozen_layers]]
        for module in frozen:
            for param in module.parameters():
                param.requires_grad = False

    def hidden_before_layer(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, object]:
        """The hidden states entering layer ``frozen_layers`` and the mask in the form the encoder gives its
        layers, from the encoder's own forward pass (a pre-hook stops it there)."""
        captured: dict[str, object] = {}

        def grab(module, args, kwargs):
            captured["hidden"] = args[0] if args else kwargs["hidden_states"]
            captured["mask"] = args[1] if len(args) > 1 else kwargs.get("attention_mask")
            raise _LayerReached

        handle = self.scorer.bert.encoder.layer[self.frozen_layers].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            self.scorer.bert(**batch)
        except _LayerReached:
            pass
        finally:
            handle.remove()
        return captured["hidden"], captured["mask"]

    def logits_from_layer(self, hidden: torch.Tensor, layer_mask: object) -> torch.Tensor:
        """The logit of each pair, resumed at layer ``frozen_layers`` from ``hidden_before_layer``'s output."""
        for layer in self.scorer.bert.encoder.layer[self.frozen_layers :]:
            hidden = layer(hidden, layer_mask)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        pooled = self.scorer.bert.pooler(hidden)
        return self.scorer.classifier(self.scorer.dropout(pooled)).squeeze(-1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.scorer(**batch).logits.squeeze(-1)


def build_cross_encoder(base_model: str, frozen_layers: int) -> tuple[CrossEncoder, object]:
    """A fresh cross-encoder on the base MiniLM, its head zero-initialised, and its tokenizer. Seed before calling."""
    path = resolve_base_model(base_model)
    scorer = BertForSequenceClassification.from_pretrained(path, num_labels=1)
    if not 0 <= frozen_layers < scorer.config.num_hidden_layers:
        raise ValueError(f"frozen_layers {frozen_layers}: must be 0 to {scorer.config.num_hidden_layers - 1}")
    nn.init.zeros_(scorer.classifier.weight)
    nn.init.zeros_(scorer.classifier.bias)
    return CrossEncoder(scorer, frozen_layers), AutoTokenizer.from_pretrained(path)


def tokenize_pairs(tokenizer, queries: list[str], passages: list[str], max_len: int) -> dict[str, torch.Tensor]:
    """(query, passage) pairs as one padded batch; a pair too long loses the end of its passage first."""
    return dict(
        tokenizer(queries, passages, padding=True, truncation="longest_first", max_length=max_len, return_tensors="pt")
    )


class FirstStage:
    """The first-stage retriever: the frozen base MiniLM as a bi-encoder (mean pooling, L2 norm)."""

    def __init__(self, base_model: str, max_len: int) -> None:
        path = resolve_base_model(base_model)
        self.encoder, self.tokenizer, self.max_len = (
            AutoModel.from_pretrained(path).eval(),
            AutoTokenizer.from_pretrained(path),
            max_len,
        )

    @torch.inference_mode()
    def embed(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        out = torch.zeros((len(texts), self.encoder.config.hidden_size))
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            batch = self.tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_len, return_tensors="pt"
            )
            hidden = self.encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out[torch.as_tensor(idx)] = nn.functional.normalize(
                (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1
            )
        return out


def save_cross_encoder(model: CrossEncoder, tokenizer, spec: RerankerSpec, model_dir: Path) -> None:
    """Write a self-contained model directory."""
    model_dir.mkdir(parents=True, exist_ok=True)
    model.scorer.save_pretrained(model_dir / "scorer")
    tokenizer.save_pretrained(model_dir / "scorer")
    (model_dir / "reranker.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")


class LoadedReranker:
    """A saved reranker ready to score: ``rerank(query, candidates)`` and ``scores(queries, passages, first_stage)``.

    With ``expected_digest`` the weights are checked against the recorded digest before any use."""

    def __init__(self, model_dir: str | Path, expected_digest: str | None = None) -> None:
        model_dir = Path(model_dir)
        self.spec = RerankerSpec(**json.loads((model_dir / "reranker.json").read_text()))
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir / "scorer")
        self.model = CrossEncoder(
            BertForSequenceClassification.from_pretrained(model_dir / "scorer"), self.spec.frozen_layers
        )
        self.digest = verified_digest(model_dir, self.model, expected_digest)
        self.model.eval()

    @torch.inference_mode()
    def logits(self, queries: list[str], passages: list[str], batch_size: int = 64) -> np.ndarray:
        """The cross-encoder's logit of each (query, passage) pair, in input order (batches are length-sorted)."""
        out = np.zeros(len(queries), dtype=np.float64)
        order = np.argsort([len(q) + len(p) for q, p in zip(queries, passages, strict=True)], kind="stable")
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenize_pairs(
                self.tokenizer, [queries[i] for i in idx], [passages[i] for i in idx], self.spec.max_seq_length
            )
            out[idx] = self.model(batch).double().numpy()
        return out

    def scores(
        self, queries: list[str], passages: list[str], first_stage: np.ndarray, batch_size: int = 64
    ) -> np.ndarray:
        """The served score of each pair: first_stage_weight × cosine / temperature + logit."""
        prior = self.spec.first_stage_weight * np.asarray(first_stage, dtype=np.float64) / self.spec.temperature
        return prior + self.logits(queries, passages, batch_size)

    def rerank(self, query: str, candidates: list[dict]) -> dict:
        """One request: candidates {passage_id, text, score (first stage)} -> ids and scores, best first (ties keep
        input order)."""
        scores = self.scores(
            [query] * len(candidates),
            [c["text"] for c in candidates],
            np.array([float(c["score"]) for c in candidates]),
            batch_size=max(1, len(candidates)),
        )
        order = np.argsort(-scores, kind="stable")
        return {
            "passage_ids": [candidates[i]["passage_id"] for i in order],
            "scores": [float(scores[i]) for i in order],
        }


def read_candidates(
    path: Path, query_ids: list[str], corpus: dict[str, str], queries_path: Path, corpus_path: Path
) -> dict[str, dict]:
    """query_id -> {"passage_ids": [k], "scores": [k]}: one row per golden query, the same k everywhere, known passages,
    no repeats within a list, first-stage scores as numbers and best first."""
    known, rows, k = set(query_ids), {}, None
    for line_no, row in _rows(path, ("query_id", "passage_ids", "scores")):
        where = f"{path}: line {line_no}"
        if row["query_id"] not in known:
            raise RetrievalDataError(
                f"{where}: query_id {row['query_id']!r} is not in {queries_path}; rule: candidates name only known "
                "queries"
            )
        if row["query_id"] in rows:
            raise RetrievalDataError(
                f"{where}: query_id {row['query_id']!r} repeated; rule: one candidate list per query"
            )
        problem = candidate_list_problem(row["passage_ids"], row["scores"], k, corpus, str(corpus_path))
        if problem:
            raise RetrievalDataError(f"{where}: {problem}")
        k = len(row["passage_ids"])
        rows[row["query_id"]] = {"passage_ids": row["passage_ids"], "scores": [float(s) for s in row["scores"]]}
    missing = [q for q in query_ids if q not in rows]
    if missing:
        raise RetrievalDataError(
            f"{path}: {len(missing)} golden query(ies) without candidates, first {missing[0]!r}; "
            "rule: every golden query has a candidate list"
        )
    return rows
