"""The shape every ``retrain_<model>`` DAG has, as the tests expect it: the design's tasks, in order.

Written down here, apart from the factory, so a change to the factory's chain fails the tests instead of
changing what they expect.
"""

DEPLOYMENT_STAGE = ["deploy_shadow", "observe_shadow", "start_canary", "observe_canary"]
"""Between approval and promotion, shadow then canary: the model server's endpoint locally, SageMaker's on aws."""

TASKS = [
    "snapshot_raw",
    "validate_raw",
    "build_dataset",
    "check_drift",
    "train_model",
    "evaluate_model",
    "gate_on_metrics",
    "register_model",
    "await_approval",
    *DEPLOYMENT_STAGE,
    "promote_model",
]
"""The local backend's chain."""

AWS_TASKS = list(TASKS)
"""The aws backend's chain: the same tasks (its deployment stage runs on the SageMaker endpoint's variants)."""
