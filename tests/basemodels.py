"""The aws base models put on the simulator's artifact bucket as ``bin/retrain deploy build`` stages them and
``deploy push`` uploads them (``code/base-models/<name>/<digest>/``): the aws tests' jobs then get the shipped config's
base model through the same channel or input as on AWS, and check its digest there."""

from __future__ import annotations

from pathlib import Path

from retrain.paths import job_python
from retrain_tools.deploy.bundle import stage_base_models


def upload_staged_base_models(s3, bucket: str, configs: list, scratch: Path) -> dict[str, dict[str, str]]:
    """Stage the configs' aws base models under ``scratch`` with the deploy tool, upload them to ``bucket`` at the
    keys push gives them, and return the manifest's ``base_models``."""
    staged = stage_base_models(scratch, configs, job_python())
    for path in sorted(p for p in scratch.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, path.relative_to(scratch).as_posix())
    return staged
