"""The seams of the tree: the runtime (plugins/) never imports the developer tooling (tools/), which
does not ship to MWAA, and the job side (include/) imports neither Airflow nor the tooling."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLING_IMPORT = re.compile(r"^\s*(from|import)\s+retrain_tools\b", re.MULTILINE)
AIRFLOW_IMPORT = re.compile(r"^\s*(from|import)\s+airflow\b", re.MULTILINE)


def offenders(folder: str, pattern: re.Pattern) -> list[str]:
    return [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / folder).rglob("*.py"))
        if pattern.search(path.read_text())
    ]


def test_the_runtime_never_imports_the_tooling():
    assert offenders("plugins", TOOLING_IMPORT) == []
    assert offenders("include", TOOLING_IMPORT) == []
    assert offenders("dags", TOOLING_IMPORT) == []


def test_the_job_side_knows_nothing_of_airflow():
    assert offenders("include", AIRFLOW_IMPORT) == []


def test_the_probes_can_fail(tmp_path, monkeypatch):
    """The same scan finds an import that is there."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "bad.py").write_text("from retrain_tools.seed import seed\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert offenders("plugins", TOOLING_IMPORT) == ["plugins/bad.py"]
