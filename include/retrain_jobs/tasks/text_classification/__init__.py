"""The text_classification task type on the job side: see docs/task-types.md."""
