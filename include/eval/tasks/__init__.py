"""Evaluation side of each task type: ``eval.tasks.<task>`` (see retrain.tasks and docs/task-types.md)."""
