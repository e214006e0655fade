"""Every location MLflow recorded: experiments, runs, logged models, and what the registered versions of ``intent``
resolve to. Prints ``{"experiments": ..., "runs": ..., "logged_models": ..., "versions": ...}`` as JSON.

Run by the ``world`` fixture of tests/jobs/test_mlflow_artifacts.py from an unrelated working directory, in the job
environment (PYTHONPATH=include:plugins, MLFLOW_TRACKING_URI set): ``python tests/jobside/mlflow_locations.py``
"""

from __future__ import annotations

import json
import sys

import mlflow


def main(argv: list[str]) -> None:
    c = mlflow.MlflowClient()
    exps = c.search_experiments(view_type=mlflow.entities.ViewType.ALL)
    logged = c.search_logged_models(experiment_ids=[e.experiment_id for e in exps])
    versions = c.search_model_versions("name='intent'")
    locations = {
        "experiments": {e.name: e.artifact_location for e in exps},
        "runs": {e.name: [r.info.artifact_uri for r in c.search_runs([e.experiment_id])] for e in exps},
        "logged_models": [m.artifact_location for m in logged],
        "versions": [c.get_model_version_download_uri(v.name, v.version) for v in versions],
    }
    print(json.dumps(locations))


if __name__ == "__main__":
    main(sys.argv[1:])
