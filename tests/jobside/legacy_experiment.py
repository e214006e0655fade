"""Create the experiment 'legacy' with its artifacts at FOREIGN_URI (outside the artifact root), then
``ensure_experiment`` it and EXPERIMENT (an experiment under the root): only the first should warn
(ArtifactLocationWarning, on stderr).

Run by tests/jobs/test_mlflow_artifacts.py::test_an_experiment_outside_the_root_is_reported_not_silently_used from
an unrelated working directory, in the job environment (PYTHONPATH=include:plugins, MLFLOW_TRACKING_URI set):
``python tests/jobside/legacy_experiment.py FOREIGN_URI EXPERIMENT``
"""

from __future__ import annotations

import sys

from mlflow import MlflowClient

from retrain.tracking import ensure_experiment


def main(argv: list[str]) -> None:
    foreign, experiment = argv
    MlflowClient().create_experiment("legacy", artifact_location=foreign)
    ensure_experiment("legacy")
    ensure_experiment(experiment)


if __name__ == "__main__":
    main(sys.argv[1:])
