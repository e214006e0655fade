"""The mwaa tier: the bundle as MWAA gets it, in a Python 3.12 environment installed the way MWAA installs it.

``mwaa_bundle`` is one ``bin/retrain deploy build`` of this tree (the pip resolve included);
``mwaa_venv`` is a fresh venv installed from the bundle's requirements.txt under MWAA's essential
constraints (the file's own --constraint line brings the rest), as MWAA runs
``pip3 install --constraint mwaa_essential_constraints.txt -r requirements.txt``. pip may use its
local cache; nothing is shared with .venv-airflow. It stands in for MWAA's image, which we cannot
run here (no Docker engine): same Python minor version, same pins, same install command.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from mwaa_figures import TIMINGS  # tests/ is on pytest's pythonpath

from retrain_tools.deploy import bundle as bundle_module
from retrain_tools.deploy.bundle import localized_requirements
from retrain_tools.deploy.resolve import MWAA_DIR, mwaa_install_command

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _require_mwaa_constraints() -> None:
    if not (MWAA_DIR / "mwaa_essential_constraints.txt").is_file():
        pytest.skip(f"MWAA 3.3.1 constraint files not found in {MWAA_DIR} (set RETRAIN_MWAA_CONSTRAINTS)")


@pytest.fixture(scope="session")
def mwaa_bundle(tmp_path_factory) -> Path:
    """dist/mwaa of this tree, built into a temp dir by the real build (checks included)."""
    _require_mwaa_constraints()
    out = tmp_path_factory.mktemp("dist") / "mwaa"
    started = time.perf_counter()
    bundle_module.build(out, allow_dirty=True, log=lambda line: None)
    TIMINGS["bundle build (parse check + pip resolve)"] = time.perf_counter() - started
    return out


@pytest.fixture(scope="session")
def mwaa_unpacked(mwaa_bundle, tmp_path_factory) -> Path:
    """The bundle copied into an empty directory: what the tier tests read, never the repo."""
    import shutil

    return Path(shutil.copytree(mwaa_bundle, tmp_path_factory.mktemp("unpacked") / "bundle"))


@pytest.fixture(scope="session")
def mwaa_venv(mwaa_unpacked, tmp_path_factory) -> Path:
    """A Python 3.12 venv installed from the bundle's requirements.txt as MWAA installs it; its python."""
    python312 = subprocess.run(
        [str(PROJECT_ROOT / "scripts" / "find-python"), "3.12"], capture_output=True, text=True, check=True
    ).stdout.strip()
    root = tmp_path_factory.mktemp("mwaa-env")
    home = root / "airflow"  # the constraint line names <AIRFLOW_HOME>/dags/constraints.txt
    (home / "requirements").mkdir(parents=True)
    import shutil

    shutil.copytree(mwaa_unpacked / "dags", home / "dags")
    requirements = home / "requirements" / "requirements.txt"
    requirements.write_text(localized_requirements((mwaa_unpacked / "requirements.txt").read_text(), home))
    started = time.perf_counter()
    subprocess.run([python312, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    result = subprocess.run(
        mwaa_install_command(python, requirements, dry_run=False) + ["--quiet"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    TIMINGS["MWAA-like venv install (pip, local cache allowed)"] = time.perf_counter() - started
    assert result.returncode == 0, (
        f"the bundle's requirements.txt did not install as MWAA installs it:\n{result.stderr[-4000:]}"
    )
    return python


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.write_sep("-", "mwaa tier figures")
        for name, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{name:<60} {seconds:7.1f} s")
