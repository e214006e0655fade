"""The model and data files of the embedding_adapter task type, shared by its training and evaluation modules.

A frozen sentence encoder (mean pooling, L2-normalised, as all-MiniLM-L6-v2 was trained) with a
low-rank residual adapter on its output, applied to queries and passages alike:

    adapted(e) = normalise(e + up(down(e)))      down: d -> rank, up: rank -> d, up zero-initialised

so a fresh adapter is exactly the frozen encoder, and training only ever moves away from it.
A saved model directory is self-contained:

    encoder/              Hugging Face weights, config and tokenizer (frozen, copied)
    adapter.safetensors   the adapter
    adapter.json          rank, max_seq_length, temperature, base model

Data files (JSON lines; a bad row is a RetrievalDataError naming the file, the line and the rule): the
corpus {"passage_id", "text"} (``data.corpus_file``, given to training as ``--corpus-file``); a training
channel's split files, the ETL's rows {"key", "text": query, "label": positive passage id, "label_id"}; a
golden directory's ``golden.jsonl`` {"key", "text"}, ``corpus.jsonl`` and ``qrels.jsonl``
{"query_id", "passage_id", "relevance"}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModel, AutoTokenizer

from retrain_jobs.base import DataError, resolve_base_model, save_model_dir, verified_digest


class RetrievalDataError(DataError):
    """A retrieval data file breaks a rule; the message names the file, the line and the rule."""


@dataclass
class Examples:
    """One split of a retrieval-shaped task: its (query, positive passage) pairs and the corpus they point into."""

    pairs: list[dict]
    corpus: dict[str, str]

    def __len__(self) -> int:
        return len(self.pairs)


@dataclass(frozen=True)
class AdapterSpec:
    """What adapter.json records beside the weights."""

    rank: int
    max_seq_length: int
    temperature: float
    base_model: str


class ResidualAdapter(nn.Module):
    """e + up(down(e)), renormalised; ``up`` starts at zero."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(embeddings + self.up(self.down(embeddings)), dim=-1)


class AdaptedEncoder(nn.Module):
    """Frozen encoder + mean pooling + L2 norm, then the adapter."""

    def __init__(self, encoder: nn.Module, rank: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.adapter = ResidualAdapter(encoder.config.hidden_size, rank)
        for param in self.encoder.parameters():
            param.requires_grad = False

    def embed_frozen(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.embed_frozen(input_ids, attention_mask))


def build_adapted_encoder(base_model: str, rank: int) -> tuple[AdaptedEncoder, object]:
    """A fresh adapter on the frozen base encoder, and its tokenizer. Seed before calling."""
    path = resolve_base_model(base_model)
    return AdaptedEncoder(AutoModel.from_pretrained(path), rank), AutoTokenizer.from_pretrained(path)


@torch.no_grad()
def encode_frozen(
    model: AdaptedEncoder,
    tokenizer,
    texts: list[str],
    max_len: int,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Frozen-encoder embeddings of ``texts`` in input order; batches are length-sorted so padding stays small."""
    model.eval()
    out = torch.zeros((len(texts), model.encoder.config.hidden_size))
    order = np.argsort([len(t) for t in texts], kind="stable")
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in idx], padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        )
        out[torch.as_tensor(idx)] = (
            model.embed_frozen(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float().cpu()
        )
    return out


def save_adapted_encoder(model: AdaptedEncoder, tokenizer, spec: AdapterSpec, model_dir: Path) -> None:
    """Write a self-contained model directory."""
    save_model_dir(model_dir, model.encoder, tokenizer, "adapter", model.adapter, "adapter.json", spec)


class LoadedRetriever:
    """A saved adapter model ready to embed: ``embed(texts)`` (adapted) and ``embed_frozen(texts)`` (the baseline).

    With ``expected_digest`` the weights are checked against the recorded digest before any use."""

    def __init__(self, model_dir: str | Path, expected_digest: str | None = None) -> None:
        model_dir = Path(model_dir)
        self.spec = AdapterSpec(**json.loads((model_dir / "adapter.json").read_text()))
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir / "encoder")
        self.model = AdaptedEncoder(AutoModel.from_pretrained(model_dir / "encoder"), self.spec.rank)
        self.model.adapter.load_state_dict(load_file(model_dir / "adapter.safetensors"))
        self.digest = verified_digest(model_dir, self.model, expected_digest)
        self.model.eval()

    def embed_frozen(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """The frozen encoder's embeddings (no adapter): the baseline."""
        return encode_frozen(self.model, self.tokenizer, texts, self.spec.max_seq_length, batch_size)

    @torch.inference_mode()
    def embed(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """Adapted embeddings, L2-normalised."""
        return self.model.adapter(self.embed_frozen(texts, batch_size))


def _rows(path: Path, fields: tuple[str, ...]):
    """(line number, row) of a JSON-lines file; every row is an object holding ``fields`` as non-empty values."""
    if not path.is_file():
        raise RetrievalDataError(f"{path}: file missing; rule: a retrieval data set has this file")
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RetrievalDataError(
                f"{path}: line {line_no}: not JSON ({exc.msg}); rule: one JSON object per line"
            ) from None
        missing = [f for f in fields if not isinstance(row, dict) or row.get(f) in (None, "")]
        if missing:
            raise RetrievalDataError(
                f"{path}: line {line_no}: missing or empty {missing}; rule: each row has {list(fields)}"
            )
        yield line_no, row


def read_corpus(path: Path) -> dict[str, str]:
    """passage_id -> text, in file order; ids are unique."""
    corpus: dict[str, str] = {}
    for line_no, row in _rows(path, ("passage_id", "text")):
        if row["passage_id"] in corpus:
            raise RetrievalDataError(
                f"{path}: line {line_no}: passage_id {row['passage_id']!r} repeated; rule: passage ids are unique"
            )
        corpus[row["passage_id"]] = row["text"]
    if not corpus:
        raise RetrievalDataError(f"{path}: no passages; rule: the corpus holds at least one passage")
    return corpus


def read_channel_pairs(directory: str | Path, corpus_file: str | Path) -> tuple[list[dict], dict[str, str]]:
    """A training channel's (query, positive passage) pairs, and the corpus they point into.

    The channel holds the ETL's split files (``*.jsonl`` rows {key, text, label, label_id}, build_dataset):
    for a retrieval-shaped task the text is the query and the label its positive passage's id. Pairs come
    back as {"query_id": key, "query": text, "passage_id": label}, in file then line order."""
    if not corpus_file:
        raise RetrievalDataError(
            f"{directory}: no corpus given; rule: a retrieval task's config names data.corpus_file "
            "(the training job's --corpus-file)"
        )
    corpus_path = Path(corpus_file)
    corpus = read_corpus(corpus_path)
    pairs = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        for line_no, row in _rows(path, ("key", "text", "label")):
            if row["label"] not in corpus:
                raise RetrievalDataError(
                    f"{path}: line {line_no}: passage_id {row['label']!r} is not in {corpus_path}; "
                    "rule: every pair's passage is in the corpus"
                )
            pairs.append({"query_id": row["key"], "query": row["text"], "passage_id": row["label"]})
    if not pairs:
        raise RetrievalDataError(
            f"{directory}: channel holds no pairs (*.jsonl); rule: a training channel is not empty"
        )
    return pairs, corpus


def read_qrels(
    path: Path, query_ids: set[str], corpus: dict[str, str], queries_path: Path, corpus_path: Path
) -> dict[str, dict[str, int]]:
    """query_id -> {passage_id: relevance}; every row names a known query and passage, every query has a relevant
    passage."""
    qrels: dict[str, dict[str, int]] = {}
    for line_no, row in _rows(path, ("query_id", "passage_id")):
        if row["query_id"] not in query_ids:
            raise RetrievalDataError(
                f"{path}: line {line_no}: query_id {row['query_id']!r} is not in {queries_path}; "
                "rule: qrels name only known queries"
            )
        if row["passage_id"] not in corpus:
            raise RetrievalDataError(
                f"{path}: line {line_no}: passage_id {row['passage_id']!r} is not in {corpus_path}; "
                "rule: qrels name only passages of the corpus"
            )
        relevance = row.get("relevance", 1)
        if not isinstance(relevance, int) or isinstance(relevance, bool) or relevance < 0:
            raise RetrievalDataError(
                f"{path}: line {line_no}: relevance {relevance!r}; rule: relevance is an integer >= 0"
            )
        qrels.setdefault(row["query_id"], {})[row["passage_id"]] = relevance
    unjudged = sorted(q for q in query_ids if not any(qrels.get(q, {}).values()))
    if unjudged:
        raise RetrievalDataError(
            f"{path}: {len(unjudged)} query(ies) with no relevant passage, first {unjudged[0]!r}; "
            "rule: every golden query has a relevant passage"
        )
    return qrels
