"""Serve an LLM LoRA model dir as MLflow serving loads it (base model and adapter, the weights digest checked): answer
two requests, then check that the same dir is refused under another digest. Prints
``{"answers": [...], "refused": bool}`` as JSON; a dir whose recorded base model digest is not the base's fails.

Run by tests/jobs/test_llm_lora.py::test_serving_loads_base_and_adapter_and_checks_digests, in the job environment
(PYTHONPATH=include:plugins): ``python tests/jobside/serve_lora.py MODEL_DIR WEIGHTS_DIGEST``
"""

from __future__ import annotations

import json
import sys

from retrain_jobs.base import WeightsMismatch
from retrain_jobs.tasks.causal_lm_lora.train import load, predict


def main(argv: list[str]) -> None:
    model = load(argv[0], argv[1])
    answers = predict(model, ["The battery died after a week.", {"text": "Great tacos."}])
    try:
        load(argv[0], "0" * 64)
        refused = False
    except WeightsMismatch:
        refused = True
    print(json.dumps({"answers": answers, "refused": refused}))


if __name__ == "__main__":
    main(sys.argv[1:])
