"""The bundle parses where MWAA would parse it, with nothing from the repository.

The bundle is unpacked into an empty directory; a Python 3.12 venv is installed from its
requirements.txt under MWAA's constraint files (conftest.py); only ``dags/`` and ``plugins.zip``
(unzipped into ``plugins/``, as MWAA does) are laid out under a temporary AIRFLOW_HOME; the env is
what startup.sh exports plus MWAA's Airflow settings (FAB auth manager, dagbag_import_timeout
30 s). Airflow's DagBag then parses ``dags/`` in that venv with an audit hook recording every file
opened outside the home, the venv and its standard library. This stands in for MWAA's DAG
processor; MWAA itself (Celery workers, SQS, its Postgres) is not run here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mwaa_figures import TIMINGS

from retrain.config import config_paths
from retrain_tools.deploy.checks import DAGBAG_IMPORT_TIMEOUT_S, ParseResult, check_parse

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def parsed(mwaa_unpacked, mwaa_venv, tmp_path_factory) -> ParseResult:
    result = check_parse(mwaa_unpacked, mwaa_venv, tmp_path_factory.mktemp("mwaa-home") / "airflow")
    TIMINGS["DAG parse in the MWAA-like env (import Airflow + DagBag)"] = result.total_s
    TIMINGS["DagBag(dags/) alone"] = result.dagbag_s
    return result


def test_the_dags_import_without_errors(parsed):
    assert parsed.import_errors == {}
    models = sorted(path.stem for path in config_paths())  # every shipped model, as the bundle carries them all
    assert parsed.dags == sorted([f"retrain_{m}" for m in models] + [f"rollback_{m}" for m in models])
    assert parsed.plugin_errors == {}


def test_each_dag_file_parses_within_mwaas_import_timeout(parsed):
    assert parsed.file_s and max(parsed.file_s.values()) < DAGBAG_IMPORT_TIMEOUT_S, parsed.file_s


def test_nothing_is_read_from_outside_the_bundle(parsed):
    assert parsed.outside_reads == []
    assert not [p for p in parsed.sys_path if p.startswith(str(PROJECT_ROOT))], parsed.sys_path


def test_the_code_comes_from_plugins_zip_and_the_venv(parsed, mwaa_venv):
    """Nothing of the repository's venvs or plugins/ is on sys.path: the plugins folder is, as Airflow adds it on
    MWAA."""
    assert any(p.endswith("/airflow/plugins") for p in parsed.sys_path)
    assert not [p for p in parsed.sys_path if ".venv-airflow" in p]


def test_the_audit_catches_a_read_outside_the_bundle(mwaa_unpacked, mwaa_venv, tmp_path):
    """The check can fail: a DAG file that reads the repository's README is reported."""
    bundle = Path(shutil.copytree(mwaa_unpacked, tmp_path / "bundle"))
    # "airflow" and "dag" in the text: DagBag's safe mode parses only files that mention both.
    (bundle / "dags" / "retrain_peek.py").write_text(
        f"# an airflow dag file\nopen({str(PROJECT_ROOT / 'README.md')!r}).read()\n"
    )
    result = check_parse(bundle, mwaa_venv, tmp_path / "airflow")
    assert "retrain_peek.py" in result.file_s
    assert str(PROJECT_ROOT / "README.md") in result.outside_reads


def test_the_venv_is_python_312_with_mwaas_pins(mwaa_venv):
    import json
    import subprocess

    code = (
        "import json, sys; from importlib.metadata import version as v; print(json.dumps([sys.version_info[:2], "
        "v('apache-airflow'), v('apache-airflow-providers-amazon'), v('boto3')]))"
    )
    info = json.loads(subprocess.run([str(mwaa_venv), "-c", code], capture_output=True, text=True, check=True).stdout)
    assert info == [[3, 12], "3.3.1", "9.34.0", "1.43.56"]
