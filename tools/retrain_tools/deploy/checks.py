"""Check a bundle the way MWAA uses it: only dags/ and plugins.zip, the env startup.sh exports.

``mwaa_home`` lays a bundle out as MWAA does under its ``AIRFLOW_HOME``: ``dags/`` as is and
``plugins.zip`` unzipped into ``plugins/``; the rest of the bundle (code/, the manifest) is not
there. ``parse_dags`` then runs Airflow's DagBag over that ``dags/`` in a fresh interpreter
with a clean environment (no PYTHONPATH: Airflow puts the plugins folder on ``sys.path``, as on
MWAA), the FAB auth manager MWAA logs people in with, and an audit hook that records every file
opened outside the allowed roots. It is a stand-in for MWAA's DAG processor, not MWAA itself.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from retrain.user_input import RUN_ID_PATTERN
from retrain_tools.deploy.resolve import MWAA_DIR, Resolution, resolve

FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
DAGBAG_IMPORT_TIMEOUT_S = 30.0  # MWAA's default dagbag_import_timeout
SYSTEM_ROOTS = ("/dev", "/proc", "/sys", "/etc", "/usr/share/zoneinfo", "/usr/lib/ssl")

PARSE_SCRIPT = r"""
import json, os, sys, time
allowed = tuple(json.loads(sys.argv[2]))
outside = set()

def record(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes)):
        path = os.path.abspath(os.fsdecode(args[0]))
        if not any(path == root or path.startswith(root.rstrip("/") + "/") for root in allowed):
            outside.add(path)

sys.addaudithook(record)
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
from airflow import plugins_manager
t1 = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
t2 = time.perf_counter()
plugins_manager.ensure_plugins_loaded()
files = {os.path.basename(s.file): s.duration.total_seconds() if hasattr(s.duration, "total_seconds")
         else float(s.duration) for s in bag.dagbag_stats}
print("PARSE_JSON " + json.dumps({
    "total_s": t2 - t0, "dagbag_s": t2 - t1, "file_s": files, "dags": sorted(bag.dags),
    "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
    "plugin_errors": {k: str(v) for k, v in plugins_manager.get_import_errors().items()},
    "outside_reads": sorted(outside), "sys_path": sys.path,
}))
"""


class BundleCheckFailed(ValueError):
    """A bundle failed a check MWAA would fail it on; the message names the file."""


@dataclass(frozen=True)
class ParseResult:
    """What the stand-in DAG processor saw; times in seconds."""

    total_s: float
    dagbag_s: float
    file_s: dict[str, float]
    dags: list[str]
    import_errors: dict[str, str]
    plugin_errors: dict[str, str]
    outside_reads: list[str]
    sys_path: list[str]


def airflow_python(project_root: Path) -> Path:
    """A Python 3.12 with Airflow: ``RETRAIN_AIRFLOW_PYTHON``, this interpreter if it is one, else .venv-airflow's."""
    if os.environ.get("RETRAIN_AIRFLOW_PYTHON"):
        return Path(os.environ["RETRAIN_AIRFLOW_PYTHON"])
    if sys.version_info[:2] == (3, 12) and importlib.util.find_spec("airflow") is not None:  # found, not imported
        return Path(sys.executable)
    return project_root / ".venv-airflow" / "bin" / "python"


def mwaa_home(bundle: Path, home: Path) -> Path:
    """``home`` laid out as MWAA's AIRFLOW_HOME: bundle's dags/ and plugins.zip unzipped into plugins/."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copytree(bundle / "dags", home / "dags")
    with zipfile.ZipFile(bundle / "plugins.zip") as plugins:
        plugins.extractall(home / "plugins")
    return home


def startup_environment(startup_sh: Path, home: Path) -> dict[str, str]:
    """The variables ``startup.sh`` exports when sourced with ``AIRFLOW_HOME=home`` in an empty environment."""
    base = {"HOME": str(home), "AIRFLOW_HOME": str(home), "PATH": "/usr/bin:/bin"}
    script = '. "$1" >/dev/null && env -0'
    out = subprocess.run(
        ["bash", "-c", script, "startup", str(startup_sh)], env=base, capture_output=True, check=True
    ).stdout
    exported = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    return {k: v for k, v in exported.items() if k not in base and k not in ("PWD", "SHLVL", "_", "OLDPWD")}


def parse_environment(home: Path, startup: dict[str, str]) -> dict[str, str]:
    """A clean environment for the DAG processor stand-in: startup.sh's exports plus MWAA's Airflow settings."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        **startup,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": str(DAGBAG_IMPORT_TIMEOUT_S),
        "AIRFLOW__SCHEDULER__ALLOWED_RUN_ID_PATTERN": RUN_ID_PATTERN,  # the manifest's airflow_configuration_options
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "TMPDIR": str(home / "tmp"),
    }


def parse_dags(python: str | Path, home: Path, env: dict[str, str], allowed: list[str]) -> ParseResult:
    """Run DagBag over ``home/dags`` with ``python``; reads outside ``allowed`` (and system roots) are recorded."""
    roots = sorted({str(Path(p).absolute()) for p in allowed} | {str(Path(p).resolve()) for p in allowed}) + list(
        SYSTEM_ROOTS
    )
    result = subprocess.run(
        [str(python), "-c", PARSE_SCRIPT, str(home / "dags"), json.dumps(roots)],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = next((line for line in reversed(result.stdout.splitlines()) if line.startswith("PARSE_JSON ")), None)
    if line is None:
        raise BundleCheckFailed(
            f"{home / 'dags'}: the DAG parse did not finish (exit {result.returncode}):\n{result.stderr[-3000:]}"
        )
    return ParseResult(**json.loads(line.removeprefix("PARSE_JSON ")))


def interpreter_roots(python: str | Path) -> list[str]:
    """sys.prefix and sys.base_prefix of ``python``: its site-packages and its standard library."""
    out = subprocess.run(
        [str(python), "-c", "import sys, json; print(json.dumps([sys.prefix, sys.base_prefix]))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def check_parse(bundle: Path, python: str | Path, home: Path) -> ParseResult:
    """Lay the bundle out under ``home`` and parse its DAGs there (see the module docstring)."""
    mwaa_home(bundle, home)
    (home / "tmp").mkdir()
    env = parse_environment(home, startup_environment(bundle / "startup.sh", home))
    return parse_dags(python, home, env, [str(home), *interpreter_roots(python)])


def require_clean_parse(bundle: Path, python: str | Path) -> ParseResult:
    """check_parse in a temporary home; BundleCheckFailed naming each DAG file that did not import."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="retrain-mwaa-home-") as tmp:
        home = Path(tmp) / "airflow"
        parsed = check_parse(bundle, python, home)
    if parsed.import_errors:  # paths shown relative to the bundle: the temporary home is gone
        lines = [
            f"dags/{Path(path).name}: {error.strip().replace(str(home) + '/', '')}"
            for path, error in sorted(parsed.import_errors.items())
        ]
        raise BundleCheckFailed("DAG files that fail to import on MWAA (nothing was written):\n" + "\n".join(lines))
    return parsed


def require_resolve(bundle: Path, python: str | Path, mwaa_dir: Path = MWAA_DIR) -> Resolution:
    """The bundle's requirements.txt resolves under MWAA's constraints, its constraint line pointed at the bundle."""
    import tempfile

    from retrain_tools.deploy.bundle import localized_requirements

    with tempfile.TemporaryDirectory(prefix="retrain-mwaa-reqs-") as tmp:
        home = Path(tmp)
        shutil.copytree(bundle / "dags", home / "dags")
        (home / "requirements").mkdir()
        requirements = home / "requirements" / "requirements.txt"
        requirements.write_text(localized_requirements((bundle / "requirements.txt").read_text(), home))
        return resolve(python, requirements, mwaa_dir)
