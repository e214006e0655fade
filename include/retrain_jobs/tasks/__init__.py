"""One package per task type: ``model.py`` (where it has a model of its own), ``train.py``, ``evaluate.py``.

The registry that names them is ``retrain.tasks`` (plugins/retrain/tasks/__init__.py); docs/task-types.md
says which files a new task type adds.
"""
