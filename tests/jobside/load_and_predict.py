"""Load a trained model directory through its task type's serving contract (``load`` with the recorded weights
digest) and answer requests with ``predict``; print ``{"answers": [...]}`` as JSON.

Run by tests/jobs/test_architectures.py in the job environment (PYTHONPATH=include:plugins):
``python tests/jobside/load_and_predict.py TASK MODEL_DIR DIGEST REQUESTS_JSON``
"""

from __future__ import annotations

import json
import sys

from retrain.tasks import task_module


def main(argv: list[str]) -> None:
    task, model_dir, digest, requests = argv
    side = task_module("train", task)
    model = side.load(model_dir, digest)
    print(json.dumps({"answers": side.predict(model, json.loads(requests))}))


if __name__ == "__main__":
    main(sys.argv[1:])
