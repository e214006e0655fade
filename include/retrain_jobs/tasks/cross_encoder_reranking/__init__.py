"""The cross_encoder_reranking task type on the job side: see docs/task-types.md."""
