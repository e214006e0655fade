"""train.py's job spec for the job tests: a train/validation channel pair and the directories SageMaker
would give the job, under one output directory."""

from __future__ import annotations

from pathlib import Path

from retrain.jobs import JobSpec
from retrain.paths import INCLUDE_DIR


def training_spec(channels: dict[str, Path], out: Path, arguments: dict[str, str], overrides: dict) -> JobSpec:
    """``arguments`` as train.py takes them (``--key value``), then ``overrides`` (``key_name=value``) on top."""
    arguments = {**arguments, **{k.replace("_", "-"): str(v) for k, v in overrides.items()}}
    return JobSpec(
        name="train_model", kind="training", script=INCLUDE_DIR / "training" / "train.py", arguments=arguments,
        channels={"train": channels["train"], "validation": channels["validation"]},
        model_dir=out / "model", output_dir=out / "output", checkpoint_dir=out / "checkpoints",
        result_file=out / "model" / "training_summary.json",
    )
