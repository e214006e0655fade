"""What a job does first (train.py's MlflowRun: ``ensure_experiment("retrain_intent")``), with the sagemaker-mlflow
plugin made unimportable: with MLFLOW_TRACKING_URI an ARN, MLflow must refuse the URI (non-zero exit, "unsupported
URI" on stderr) rather than log anywhere else.

Run by tests/aws/test_managed_mlflow.py::test_without_the_plugin_mlflow_refuses_the_arn, in the job environment
(PYTHONPATH=include:plugins): ``python tests/jobside/ensure_experiment_without_plugin.py``
"""

from __future__ import annotations

import sys


class BlockPlugin:
    """A meta path finder that refuses sagemaker_mlflow and its submodules."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "sagemaker_mlflow":
            raise ImportError(f"{name} blocked by the test")


def main(argv: list[str]) -> None:
    sys.meta_path.insert(0, BlockPlugin())
    # Imported here, after the block: nothing of MLflow's may load before it.
    from retrain.tracking import ensure_experiment

    ensure_experiment("retrain_intent")


if __name__ == "__main__":
    main(sys.argv[1:])
