"""The text classifier's split forward pass against the whole encoder: for layers 0, 4 and 5, the encoder resumed
from the output of the layers below it must give the whole encoder's embedding, on a padded batch. Prints
``{"gaps": {layer: max abs difference}, "padded": padding tokens in the batch}`` as JSON.

Run by tests/jobs/test_train.py::test_top_layers_resumed_from_the_frozen_layers_output_match_the_whole_encoder,
in the job environment (PYTHONPATH=include:plugins): ``python tests/jobside/top_layers_fixture.py``
"""

from __future__ import annotations

import json
import sys

import torch

from retrain_jobs.tasks.text_classification.model import build_classifier


def main(argv: list[str]) -> None:
    torch.manual_seed(0)
    model, tokenizer = build_classifier("all-MiniLM-L6-v2", 3)
    model.eval()
    batch = tokenizer(
        ["my card was declined twice", "hi", "where is the refund I asked for last week"],
        padding=True,
        return_tensors="pt",
    )
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        whole = model.embed(ids, mask)
        gaps = {}
        for index in (0, 4, 5):
            hidden, layer_mask = model.hidden_before_layer(index, ids, mask)
            gaps[index] = (model.embed_from_layer(index, hidden, layer_mask, mask) - whole).abs().max().item()
    print(json.dumps({"gaps": gaps, "padded": int((mask == 0).sum())}))


if __name__ == "__main__":
    main(sys.argv[1:])
