"""Build a tiny random-weight model of one architecture a task type declares (``retrain.tasks.ARCHITECTURES``),
offline, from its transformers config class, with the tokenizer of the catalogued model of that architecture, and save
it (weights, config, tokenizer) to OUT_DIR; print the saved class name. ``distilbert`` builds the DistilBERT that no
task type declares, to show how the job code fails on it.

Run by tests/jobs/test_architectures.py in the job environment (PYTHONPATH=include:plugins):
``python tests/jobside/tiny_architecture.py MODEL_TYPE CLASS_NAME OUT_DIR``
"""

from __future__ import annotations

import sys

import torch
import transformers
from transformers import AutoTokenizer

from retrain_jobs.base import resolve_base_model

SIZES = {  # small enough to train a step in a second on a CPU
    "bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    "distilbert": dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64),
    "llama": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    ),
}
TOKENIZER_OF = {"bert": "all-MiniLM-L6-v2", "distilbert": "all-MiniLM-L6-v2", "llama": "SmolLM2-135M-Instruct"}
CONFIG_CLASS = {"bert": "BertConfig", "distilbert": "DistilBertConfig", "llama": "LlamaConfig"}


def main(argv: list[str]) -> None:
    model_type, class_name, out = argv
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_base_model(TOKENIZER_OF[model_type])))
    special = {
        k: getattr(tokenizer, k)
        for k in ("bos_token_id", "eos_token_id", "pad_token_id")
        if getattr(tokenizer, k) is not None
    }
    if class_name.endswith("ForSequenceClassification"):
        special["num_labels"] = 1  # the reranker's one-logit head, as its job code builds it
    config = getattr(transformers, CONFIG_CLASS[model_type])(vocab_size=len(tokenizer), **SIZES[model_type], **special)
    torch.manual_seed(0)
    model = getattr(transformers, class_name)(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(type(model).__name__, config.model_type)


if __name__ == "__main__":
    main(sys.argv[1:])
