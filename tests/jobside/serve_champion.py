"""Load MODEL's champion through MLflow (pyfunc, ``models:/MODEL@champion``) and print its answer to one request
(REQUEST_JSON: the DataFrame's data a caller hands mlflow.pyfunc) as JSON.

Run by tests/integration/test_other_models_local.py::test_the_champion_serves_through_its_task_types_loader, in the
job environment (PYTHONPATH=include:plugins, the stack's MLflow):
``python tests/jobside/serve_champion.py MODEL REQUEST_JSON``
"""

from __future__ import annotations

import json
import sys

import mlflow
import pandas as pd


def main(argv: list[str]) -> None:
    m = mlflow.pyfunc.load_model(f"models:/{argv[0]}@champion")
    print(json.dumps(m.predict(pd.DataFrame(json.loads(argv[1])))))


if __name__ == "__main__":
    main(sys.argv[1:])
