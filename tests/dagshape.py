"""The shape every ``retrain_<model>`` DAG has, as the tests expect it: the design's ten tasks, in order.

Written down here, apart from the factory, so a change to the factory's chain fails the tests instead of
changing what they expect.
"""

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
    "promote_model",
]
