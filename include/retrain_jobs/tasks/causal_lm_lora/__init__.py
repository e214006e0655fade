"""The causal_lm_lora task type on the job side: see docs/task-types.md."""
