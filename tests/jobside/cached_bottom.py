"""The cross-encoder's logits on a padded batch of two pairs, from the whole model and from the cached output of the
layers below ``frozen_layers`` (as training runs them), with a non-zero head. Prints
``{"padded": padding tokens, "whole": logits, "cached": logits}`` as JSON.

Run by tests/jobs/test_reranker.py::test_the_cached_frozen_bottom_gives_the_whole_models_logits, in the job
environment (PYTHONPATH=include:plugins): ``python tests/jobside/cached_bottom.py``
"""

from __future__ import annotations

import json
import sys

import torch

from retrain_jobs.tasks.cross_encoder_reranking.model import build_cross_encoder, tokenize_pairs


def main(argv: list[str]) -> None:
    torch.manual_seed(0)
    model, tokenizer = build_cross_encoder("all-MiniLM-L6-v2", 2)
    torch.nn.init.normal_(model.scorer.classifier.weight)  # a head that is not zero, so the logits say something
    model.eval()
    batch = tokenize_pairs(
        tokenizer,
        ["card not here", "what is the exchange rate today for euros"],
        [
            "Card arrival. Customers write: where is my card?",
            "Exchange rate. Customers write, for example: " + "rates " * 40,
        ],
        48,
    )
    with torch.no_grad():
        whole = model(batch)
        cached = model.logits_from_layer(*model.hidden_before_layer(batch))
    got = {"padded": int((batch["attention_mask"] == 0).sum()), "whole": whole.tolist(), "cached": cached.tolist()}
    print(json.dumps(got))


if __name__ == "__main__":
    main(sys.argv[1:])
