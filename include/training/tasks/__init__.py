"""Training side of each task type: ``training.tasks.<task>`` (see retrain.tasks and docs/task-types.md)."""
