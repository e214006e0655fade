"""Load a registered model version through MLflow (pyfunc) and print ``loaded``.

Run by tests/jobs/test_registry.py::test_weights_changed_after_registration_are_neither_rolled_back_to_nor_served,
in the job environment (PYTHONPATH=include:plugins): ``python tests/jobside/load_registered.py models:/intent/3``
"""

from __future__ import annotations

import sys

import mlflow


def main(argv: list[str]) -> None:
    (model_uri,) = argv
    mlflow.pyfunc.load_model(model_uri)
    print("loaded")


if __name__ == "__main__":
    main(sys.argv[1:])
