"""Load a text classifier's model dir as MLflow serving does (RetrainModel.load_context), expecting a weights digest:
a dir whose weights are not those of the digest fails with WeightsMismatch ("refusing to load").

Run by tests/jobs/test_registry.py::test_weights_changed_after_registration_are_neither_rolled_back_to_nor_served,
in the job environment (PYTHONPATH=include:plugins): ``python tests/jobside/load_model_dir.py MODEL_DIR WEIGHTS_DIGEST``
"""

from __future__ import annotations

import sys
import types

from retrain_jobs.mlflow_model import RetrainModel


def main(argv: list[str]) -> None:
    model_dir, weights_digest = argv
    ctx = types.SimpleNamespace(
        artifacts={"model": model_dir}, model_config={"weights_digest": weights_digest, "task": "text_classification"}
    )
    RetrainModel().load_context(ctx)


if __name__ == "__main__":
    main(sys.argv[1:])
