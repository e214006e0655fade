"""requirements.txt installs on Amazon MWAA 3.3.1: pip resolves it under MWAA's own constraints.

MWAA runs `pip3 install --constraint mwaa_essential_constraints.txt -r requirements.txt` and adds
its copy of Airflow's constraints-3.3.1 when requirements.txt has no constraint line. These tests
run the same resolve (retrain_tools.deploy.resolve, which `bin/retrain deploy build` runs too) as a dry run with this
interpreter (the Airflow venv's Python 3.12), so a pin
that MWAA would refuse fails here, before a deploy. They need the package registry that pip is
configured for (about 30 s a resolve); if it cannot be reached they fail and say so.

MWAA's constraint files are the project's vendored copy, `constraints/mwaa-3.3.1/` (with its SOURCE.md;
RETRAIN_MWAA_CONSTRAINTS names another directory):

    .venv-airflow/bin/python -m pytest tests/unit/test_requirements_resolve.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from retrain_tools.deploy.resolve import (
    AIRFLOW_CONSTRAINTS_NAME,
    ESSENTIAL_NAME,
    MWAA_DIR,
    IndexUnreachable,
    Resolution,
    ResolveError,
    constraint_lines,
    normalise,
    resolve,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = PROJECT_ROOT / "requirements.txt"
CELERY_REQUIREMENTS = PROJECT_ROOT / "requirements-celery.txt"
PROJECT_CONSTRAINTS = PROJECT_ROOT / "constraints" / "airflow.txt"
ESSENTIAL = MWAA_DIR / ESSENTIAL_NAME
AIRFLOW_CONSTRAINTS = MWAA_DIR / AIRFLOW_CONSTRAINTS_NAME

# The pins that matter on MWAA 3.3.1 (its image's Airflow, providers and constraint pins), as pip must resolve them.
EXPECTED = {
    "apache-airflow": "3.3.1",
    "apache-airflow-providers-amazon": "9.34.0",
    "apache-airflow-providers-standard": "1.17.0",
    "boto3": "1.43.56",
    "botocore": "1.43.56",
    "numpy": "2.5.1",
    "sqlalchemy": "2.0.51",
}
# The Airflow environment holds none of these: heavy libraries live in the job environment and images only.
HEAVY = {"torch", "transformers", "pyspark", "pandas", "sagemaker", "sagemaker-core", "mlflow", "deepspeed"}


def _pins(path: Path) -> dict[str, str]:
    """`name[extras]==version` lines of a constraints or requirements file, by normalised name (extras dropped)."""
    pins = {}
    for line in path.read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec:
            name, _, version = spec.partition("==")
            assert version, f"{path.name}: not an exact pin: {line!r}"
            pins[normalise(name.split("[", 1)[0])] = version.strip()
    return pins


def _resolve(requirements: Path) -> Resolution | ResolveError:
    """retrain_tools.deploy.resolve (MWAA's install as a dry run, the check `deploy build` runs); a failure is
    returned."""
    try:
        return resolve(sys.executable, requirements, MWAA_DIR, cwd=PROJECT_ROOT)
    except IndexUnreachable as exc:
        pytest.fail(
            f"the package registry could not be reached, so the resolve against MWAA's constraints "
            f"could not run (CI reaches it; check pip's index configuration):\n{exc}"
        )
    except ResolveError as exc:
        return exc


@pytest.fixture(scope="module")
def mwaa_constraints() -> Path:
    """MWAA's two constraint files, or a skip that says where they were looked for."""
    if not (ESSENTIAL.is_file() and AIRFLOW_CONSTRAINTS.is_file()):
        pytest.skip(f"MWAA 3.3.1 constraint files not found in {MWAA_DIR} (set RETRAIN_MWAA_CONSTRAINTS)")
    return MWAA_DIR


@pytest.fixture(scope="module")
def resolution(mwaa_constraints) -> Resolution | ResolveError:
    """pip's dry run of requirements.txt on MWAA, run once for the module (a failure too)."""
    assert sys.version_info[:2] == (3, 12), f"MWAA 3.3.1 runs Python 3.12; this is {sys.version.split()[0]}"
    return _resolve(REQUIREMENTS)


@pytest.fixture
def resolved(resolution) -> dict[str, str]:
    """What pip would install from requirements.txt on MWAA: normalised name -> version."""
    assert isinstance(resolution, Resolution), (
        f"requirements.txt does not resolve under MWAA 3.3.1's constraints:\n{resolution}"
    )
    return resolution.installed


def test_requirements_leave_mwaa_its_airflow_constraints():
    """A constraint line in requirements.txt would make MWAA drop Airflow's constraints."""
    assert not constraint_lines(REQUIREMENTS.read_text())


def test_project_constraints_carry_mwaa_pins_unchanged(mwaa_constraints):
    essential, airflow = _pins(ESSENTIAL), _pins(AIRFLOW_CONSTRAINTS)
    mwaa = {**airflow, **essential}  # essential constraints win: MWAA never lets them be overridden
    project = _pins(PROJECT_CONSTRAINTS)
    differing = {name: (project.get(name), version) for name, version in mwaa.items() if project.get(name) != version}
    assert not differing, f"constraints/airflow.txt vs MWAA 3.3.1 (ours, MWAA's): {differing}"


def test_celery_deployment_pins_are_mwaa_pins(mwaa_constraints):
    """The local Celery deployment (tests/celery, docker-compose) runs the executor at MWAA 3.3.1's versions."""
    mwaa = {**_pins(AIRFLOW_CONSTRAINTS), **_pins(ESSENTIAL)}
    pins = _pins(CELERY_REQUIREMENTS)
    assert {"apache-airflow-providers-celery", "celery", "redis", "psycopg2-binary", "asyncpg"} <= pins.keys()
    assert {name: mwaa.get(name) for name in pins} == pins


def test_requirements_resolve_to_mwaa_pins(resolved):
    assert {name: resolved.get(name) for name in EXPECTED} == EXPECTED


def test_deferrable_operators_get_aiobotocore(resolved):
    assert "aiobotocore" in resolved, "the amazon provider's [aiobotocore] extra did not resolve"


def test_requirements_pull_in_nothing_heavy(resolved):
    assert not HEAVY & resolved.keys()


def test_conflicting_pin_fails_to_resolve(mwaa_constraints, tmp_path):
    """The check can fail: a boto3 newer than MWAA's is refused, and pip names boto3."""
    conflicting = tmp_path / "requirements.txt"
    conflicting.write_text(f"-r {REQUIREMENTS}\nboto3==1.44.5\n")
    result = _resolve(conflicting)
    assert isinstance(result, ResolveError), "pip resolved boto3==1.44.5 under MWAA's boto3==1.43.56 constraint"
    assert "boto3" in str(result) and "conflict" in str(result).lower(), str(result)
