"""The embedding_adapter task type on the job side: see docs/task-types.md."""
