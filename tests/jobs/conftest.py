"""Shared fixtures of the jobs tier: tiny real data, and a model trained on it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from retrain.runner import LocalJob, command_line, job_environment
from tinydata import tiny_channels  # tests/ is on pytest's pythonpath
from trainspec import training_spec


@pytest.fixture(scope="module")
def channels(tmp_path_factory) -> dict[str, Path]:
    """A tiny train/validation split: 5 intents of Banking77, 24 + 6 examples each."""
    return tiny_channels(tmp_path_factory.mktemp("dataset"), 24, 6)


def spec_for(channels, out: Path, **overrides) -> LocalJob:
    return training_spec(
        channels,
        out,
        {
            "labels-file": str(channels["labels"]),
            "dataset-version": "ds-tiny",
            "epochs": "6",
            "batch-size": "16",
            "head-learning-rate": "0.05",
            "threads": "2",
            "seed": "7",
        },
        overrides,
    )


def train(spec: LocalJob, extra_env: dict | None = None, cwd: Path | None = None) -> dict:
    for d in (spec.model_dir, spec.checkpoint_dir):
        d.mkdir(parents=True, exist_ok=True)
    env = {**job_environment(spec), **(extra_env or {})}
    proc = subprocess.run(command_line(spec), env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(spec.result_file.read_text())


@pytest.fixture(scope="session")
def training():
    """``spec_for(channels, out, **overrides)`` and ``train(spec, env)``, shared by the job tests."""
    return spec_for, train
