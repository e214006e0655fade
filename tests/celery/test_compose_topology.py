"""docker-compose.yaml describes the deployment the Celery tier runs: same services, settings, endpoints,
commands and versions as scripts/celery_stack.py, the tier's one source of truth.

There is no Docker engine on the development machines. When the Docker client has the compose plugin,
the file is rendered by ``docker compose config`` (offline: it only reads the file); otherwise it is
parsed as YAML (anchors and merge keys resolved), and the same checks run on the result.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

import celery_stack
from celery_stack import POSTGRES_MAJOR, REDIS_SERIES, SETTINGS, SHARED_SECRETS, endpoints, processes, server_version
from compose_secrets import SECRETS, write_secrets

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COMPOSE = PROJECT_ROOT / "docker-compose.yaml"
AIRFLOW_SERVICES = {f"airflow-{name}": command for name, command in processes().items()}


def _rendered() -> tuple[dict, str]:
    """The compose model, and how it was obtained."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        secrets = {name: generate() for name, generate in SECRETS.items()}  # compose refuses to render without them
        out = subprocess.run(
            [docker, "compose", "-f", str(COMPOSE), "config"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **secrets},
        )
        assert out.returncode == 0, out.stderr
        return yaml.safe_load(out.stdout), "docker compose config"
    return yaml.safe_load(COMPOSE.read_text()), "yaml"


@pytest.fixture(scope="module")
def compose() -> dict:
    model, how = _rendered()
    print(f"docker-compose.yaml read by {how}")
    return model


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # docker compose config may render KEY=VALUE lines
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def test_the_services_are_the_celery_tiers_processes(compose):
    assert set(compose["services"]) == {"postgres", "redis", "airflow-init", "mlflow", *AIRFLOW_SERVICES}
    for name, command in AIRFLOW_SERVICES.items():
        assert compose["services"][name]["command"] == command, name
    assert sum(name.startswith("airflow-worker") for name in compose["services"]) == len(celery_stack.WORKERS) == 2


def test_every_airflow_container_has_the_tiers_settings_and_endpoints(compose):
    expected = {**SETTINGS, **endpoints("postgres:5432", "redis:6379", "airflow-api-server:8080")}
    for name in [*AIRFLOW_SERVICES, "airflow-init"]:
        env = _env(compose["services"][name])
        assert {key: env.get(key) for key in expected} == expected, name
        assert set(SHARED_SECRETS) <= env.keys(), (
            f"{name}: the scheduler's task tokens would not verify at the API server"
        )
    envs = [_env(compose["services"][name]) for name in AIRFLOW_SERVICES]
    assert all(env == envs[0] for env in envs), "the Airflow containers differ in their environment"


def test_compose_ships_no_secret_and_names_how_to_generate_each():
    """Each shared secret is a required variable, ``${NAME:?how}``: compose refuses to start without it, and no default
    value ships for every clone to share. Read from the file itself (a rendered model has the values substituted)."""
    raw = yaml.safe_load(COMPOSE.read_text())
    for name in [*AIRFLOW_SERVICES, "airflow-init"]:
        env = {**raw["x-airflow"]["environment"], **_env(raw["services"][name])}
        for key in SHARED_SECRETS:
            required = re.fullmatch(r"\$\{(\w+):\?[^}]*scripts/compose_secrets\.py[^}]*\}", str(env[key]))
            assert required and required.group(1) in SECRETS, f"{name}: {key} = {env[key]}"


def test_compose_secrets_are_generated_once_into_an_owner_only_env_file(tmp_path):
    from cryptography.fernet import Fernet

    env_file = tmp_path / ".env"
    env_file.write_text("RETRAIN_JWT_SECRET=kept\nOTHER=1")
    env_file.chmod(0o644)
    assert write_secrets(env_file) == ["RETRAIN_API_SECRET_KEY", "RETRAIN_FERNET_KEY"]
    first = env_file.read_text()
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in first.splitlines())
    assert (
        values["RETRAIN_JWT_SECRET"] == "kept" and values["OTHER"] == "1" and len(values["RETRAIN_API_SECRET_KEY"]) > 30
    )
    Fernet(values["RETRAIN_FERNET_KEY"].encode())  # a valid key, or this raises
    assert write_secrets(env_file) == [] and env_file.read_text() == first  # generated once


def test_workers_share_the_store_and_the_logs(compose):
    """One task writes what the next reads on another worker: every Airflow container mounts the same store."""
    for name in AIRFLOW_SERVICES:
        service = compose["services"][name]
        store = _env(service)["RETRAIN_HOME"]
        mounts = {_target(volume): _source(volume) for volume in service["volumes"]}
        assert mounts.get(store) == "retrain-state" and mounts.get("/opt/airflow/logs") == "airflow-logs", (
            name,
            mounts,
        )


def test_the_databases_and_the_init_step_match_the_tier(compose):
    services = compose["services"]
    assert services["postgres"]["image"] == f"postgres:{POSTGRES_MAJOR}"
    assert services["redis"]["image"] == f"redis:{REDIS_SERIES}"
    init_sql = next(_source(v) for v in services["postgres"]["volumes"] if "docker-entrypoint-initdb.d" in _target(v))
    assert re.search(
        r"CREATE DATABASE mlflow;",
        (PROJECT_ROOT / init_sql).read_text() if not Path(init_sql).is_absolute() else Path(init_sql).read_text(),
    )
    init = (
        " ".join(services["airflow-init"]["command"])
        if isinstance(services["airflow-init"]["command"], list)
        else services["airflow-init"]["command"]
    )
    assert "airflow db migrate" in init and celery_stack.MLFLOW_SCHEMA_INIT in init
    for name in AIRFLOW_SERVICES:
        assert "airflow-init" in services[name]["depends_on"], name
    assert {"postgres", "redis"} <= set(services["airflow-init"]["depends_on"])


def test_the_image_and_the_tier_run_the_same_versions():
    """The Dockerfile's base and pins are the Airflow environment's; the tier's servers are compose's images."""
    base = next(
        line.split()[1] for line in (PROJECT_ROOT / "Dockerfile").read_text().splitlines() if line.startswith("FROM ")
    )
    assert base == celery_stack.AIRFLOW_IMAGE
    airflow_version, python = re.fullmatch(r"apache/airflow:([\d.]+)-python([\d.]+)", base).groups()
    assert (
        version("apache-airflow") == airflow_version and f"{sys.version_info.major}.{sys.version_info.minor}" == python
    )
    assert "requirements-celery.txt" in (PROJECT_ROOT / "Dockerfile").read_text()
    assert server_version("postgres").split(".")[0] == POSTGRES_MAJOR
    assert server_version("redis-server").startswith(REDIS_SERIES + ".")


def _source(volume) -> str:
    return volume["source"] if isinstance(volume, dict) else volume.split(":")[0]


def _target(volume) -> str:
    return volume["target"] if isinstance(volume, dict) else volume.split(":")[1]
