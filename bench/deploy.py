"""MWAA bundle: build time, and DAG parse time inside an MWAA-like environment.

Measured: ``retrain_tools.deploy.bundle.build`` of this tree into a temp dir, with its checks (the
DAG parse under RETRAIN_BACKEND=aws and the FAB auth manager, and pip's dry-run resolve under
MWAA 3.3.1's constraints; the resolve needs the package index), and once without the resolve;
then a fresh Python 3.12 venv installed from the bundle's requirements.txt as MWAA installs it
(pip's local cache allowed), and the parse of the bundle's dags/ there, with only dags/ and the
unzipped plugins.zip under a temporary AIRFLOW_HOME, in a fresh interpreter per repetition.
Baseline (same run): the parse of the project's own dags/ with .venv-airflow (bench/parse.py's measure).
Target: every DAG file parses within MWAA's dagbag_import_timeout of 30 s; the build and the
venv install have no target (MWAA gives the requirements install 9 minutes).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from common import PROJECT_ROOT, log, median, row

TIMEOUT_S = 30.0


def _build(out: Path, resolve: bool) -> float:
    from retrain_tools.deploy import bundle

    if out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    bundle.build(out, check_resolve=resolve, allow_dirty=True, log=lambda line: None)
    return time.perf_counter() - started


def _venv(bundle_dir: Path, root: Path) -> tuple[Path, float]:
    from retrain_tools.deploy.bundle import localized_requirements
    from retrain_tools.deploy.resolve import mwaa_install_command

    python312 = subprocess.run(
        [str(PROJECT_ROOT / "scripts" / "find-python"), "3.12"], capture_output=True, text=True, check=True
    ).stdout.strip()
    home = root / "airflow"
    shutil.copytree(bundle_dir / "dags", home / "dags")
    (home / "requirements").mkdir()
    requirements = home / "requirements" / "requirements.txt"
    requirements.write_text(localized_requirements((bundle_dir / "requirements.txt").read_text(), home))
    started = time.perf_counter()
    subprocess.run([python312, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    subprocess.run(
        mwaa_install_command(python, requirements, dry_run=False) + ["--quiet"], check=True, capture_output=True
    )
    return python, time.perf_counter() - started


def run(quick: bool, work: Path) -> dict:
    from retrain_tools.deploy.checks import check_parse

    reps = 2 if quick else 3
    work.mkdir(parents=True, exist_ok=True)
    builds = [_build(work / "mwaa", resolve=True) for _ in range(reps)]
    builds_offline = [_build(work / "mwaa", resolve=False) for _ in range(reps)]
    log(f"build {median(builds):.1f} s with the pip resolve, {median(builds_offline):.1f} s without")
    python, install_s = _venv(work / "mwaa", work / "env")
    log(f"MWAA-like venv installed in {install_s:.0f} s")
    parses = [check_parse(work / "mwaa", python, work / f"home-{i}" / "airflow") for i in range(reps)]
    total = median([p.total_s for p in parses])
    worst_file = max(max(p.file_s.values()) for p in parses)
    errors = parses[-1].import_errors
    local = [
        check_parse(
            work / "mwaa", PROJECT_ROOT / ".venv-airflow" / "bin" / "python", work / f"local-{i}" / "airflow"
        ).total_s
        for i in range(reps)
    ]
    rows = [
        row(
            "MWAA bundle",
            "deploy build (configs, DAG parse check, pip resolve under MWAA constraints)",
            round(median(builds), 2),
            "s",
            reps,
        ),
        row("MWAA bundle", "deploy build without the pip resolve", round(median(builds_offline), 2), "s", reps),
        row(
            "MWAA bundle",
            "Python 3.12 venv from the bundle's requirements.txt, as MWAA installs it (pip cache warm)",
            round(install_s, 1),
            "s",
            1,
            target="≤ 540 s (MWAA's install limit)",
            met=install_s <= 540,
        ),
        row(
            "MWAA bundle",
            "DAG parse in the MWAA-like env (fresh interpreter: import Airflow + DagBag)",
            round(total, 3),
            "s",
            reps,
            baseline=f"same bundle with .venv-airflow: {median(local):.3f} s",
            ratio=f"{total / median(local):.2f}x",
            target=f"every file < {TIMEOUT_S:g} s (dagbag_import_timeout)",
            met=worst_file < TIMEOUT_S and not errors,
        ),
        row(
            "MWAA bundle",
            "slowest DAG file (DagBag's own per-file time)",
            round(worst_file, 3),
            "s",
            reps,
            target=f"< {TIMEOUT_S:g} s",
            met=worst_file < TIMEOUT_S,
        ),
    ]
    notes = [
        f"MWAA bundle: import errors {errors or 'none'}; files read outside the bundle, venv and stdlib: "
        f"{parses[-1].outside_reads or 'none'}. MWAA itself was not run: the env is a venv with MWAA's Python minor "
        "version and pins, not MWAA's image."
    ]
    return {
        "rows": rows,
        "notes": notes,
        "details": {
            "builds_s": builds,
            "builds_offline_s": builds_offline,
            "install_s": install_s,
            "parse_total_s": [p.total_s for p in parses],
            "parse_file_s": [p.file_s for p in parses],
        },
    }
