"""Task types: what a config's ``task`` selects, as one module per side.

A task type is one package on the job side and one module on the Airflow side, looked up here:

- ``include/retrain_jobs/tasks/<task>/`` (job environment): ``model.py`` the model (build, save, load),
  ``train.py`` reads the training channels, computes the loss and the validation figures and saves the
  model directory, ``evaluate.py`` loads a model directory (checking its weights digest), scores the
  golden set and adds the task's sections to the report;
- ``retrain.tasks.<task>`` (plugins/, core): the task's headline metrics and its gate criteria.

Everything the task types share is written once around them: seeding, the SageMaker
contract, checkpoint/resume and MLflow logging (``retrain_jobs/train.py``), the weights digest
(``retrain_jobs/base.py``), golden-set verification, the latency protocol and the report
skeleton (``retrain_jobs/evaluate.py``, ``retrain_jobs/report.py``), the ranking metrics of the
retrieval-shaped tasks (``retrain_jobs/ranking.py``), and the common gate criteria
(``retrain/gate.py``). None of them branches on the task. docs/task-types.md says how to add one.
Plain Python: nothing heavy is imported until a side's module is asked for.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TASK_TYPES: dict[str, tuple[str, ...]] = {
    "text_classification": ("macro_f1", "accuracy"),
    "embedding_adapter": ("recall_at_1", "recall_at_5", "recall_at_10", "mrr_at_10", "ndcg_at_10"),
    "cross_encoder_reranking": ("mrr_at_10", "ndcg_at_10"),
    "causal_lm_lora": ("format_exact_match", "format_valid"),
}
"""Each task type that has all three modules, with its headline metrics: the scalars (higher is
better) that its metrics.json blocks carry and that ``gate.floors`` and ``gate.min_delta`` may name.
Kept here, as plain data, so a config validates without importing a task's modules."""

ARCHITECTURES: dict[str, dict[str, str]] = {
    "text_classification": {"bert": "BertModel"},
    "embedding_adapter": {"bert": "BertModel"},
    "cross_encoder_reranking": {"bert": "BertForSequenceClassification"},
    "causal_lm_lora": {"llama": "LlamaForCausalLM"},
}
"""The base-model architectures each task type's job code builds: Hugging Face ``model_type`` -> the class it
instantiates. The code reaches into that class (``encoder.encoder.layer``, ``bert.pooler``, LoRA's target modules), so
another architecture would fail deep inside a job; a config naming one is refused at load time instead
(``retrain.config``), and tests/jobs/test_architectures.py trains, saves, loads and scores a tiny random-weight model of
every pair listed here."""


def supported_architectures(task: str) -> dict[str, str]:
    """``model_type`` -> model class of the base models a task type's job code supports."""
    return ARCHITECTURES[check_task(task)]


SIDES = {
    "train": "retrain_jobs.tasks.{task}.train",
    "evaluate": "retrain_jobs.tasks.{task}.evaluate",
    "gate": "retrain.tasks.{task}",
}
"""Where each side's module of a task type lives."""


class UnknownTask(ValueError):
    """A task name that no task type provides."""


def check_task(task: str) -> str:
    """``task`` if it is a known task type; else an error listing the known ones."""
    if task not in TASK_TYPES:
        raise UnknownTask(f"unknown task {task!r}; known task types: {', '.join(TASK_TYPES)}")
    return task


def headline_metrics(task: str) -> tuple[str, ...]:
    """The headline metrics of a task type."""
    return TASK_TYPES[check_task(task)]


def task_module(side: str, task: str) -> ModuleType:
    """The module of one side (``train``, ``evaluate`` or ``gate``) of a task type."""
    return importlib.import_module(SIDES[side].format(task=check_task(task)))
