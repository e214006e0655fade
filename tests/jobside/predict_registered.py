"""Load a registered model version through MLflow (pyfunc) and print its label names for two texts, as a list.

Run by tests/jobs/test_registry.py::test_lifecycle, in the job environment (PYTHONPATH=include:plugins):
``python tests/jobside/predict_registered.py models:/intent@challenger``
"""

from __future__ import annotations

import sys

import mlflow
import pandas as pd


def main(argv: list[str]) -> None:
    (model_uri,) = argv
    m = mlflow.pyfunc.load_model(model_uri)
    print(list(m.predict(pd.DataFrame({"text": ["I lost my card, someone stole it", "what is the exchange rate"]}))))


if __name__ == "__main__":
    main(sys.argv[1:])
