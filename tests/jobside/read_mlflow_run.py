"""What an MLflow server holds for a run, read straight from it (no plugin, no signing): its experiment, name, status,
artifact URI, params, tags, metrics and the steps of ``train_loss``, printed as JSON.

Run by the ``managed_run`` fixture of tests/aws/test_managed_mlflow.py with the job environment's interpreter (no AWS,
MLflow or SageMaker settings in its environment):
``python tests/jobside/read_mlflow_run.py TRACKING_URI RUN_ID``
"""

from __future__ import annotations

import json
import sys

from mlflow import MlflowClient


def main(argv: list[str]) -> None:
    client = MlflowClient(tracking_uri=argv[0])
    run = client.get_run(argv[1])
    experiment = client.get_experiment(run.info.experiment_id)
    held = {
        "experiment": experiment.name,
        "experiment_location": experiment.artifact_location,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "artifact_uri": run.info.artifact_uri,
        "params": run.data.params,
        "tags": run.data.tags,
        "metrics": run.data.metrics,
        "train_loss_steps": [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")],
    }
    print(json.dumps(held))


if __name__ == "__main__":
    main(sys.argv[1:])
