"""``make test-fast`` (``-m "not scheduler"``) runs nothing that starts an Airflow: every place in tests/ that starts
one is a fixture in ``conftest.STARTS_AIRFLOW`` (whose tests get the ``scheduler`` marker) or a test in a module
marked ``scheduler`` itself."""

from __future__ import annotations

import ast
from pathlib import Path

from tiers import STARTS_AIRFLOW  # tests/ is on pytest's pythonpath

STARTERS = {"standalone_airflow", "start_standalone", "start_fab_airflow", "CeleryStack"}
"""What starts an Airflow (tests/airflowstack.py, retrain_tools.standalone, scripts/celery_stack.py)."""
DEFINES_STARTERS = {"airflowstack.py"}
TESTS_DIR = Path(__file__).resolve().parents[1]


def _calls_a_starter(function: ast.AST) -> bool:
    return any(
        isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in STARTERS
        for node in ast.walk(function)
    )


def _module_marked_scheduler(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
            return "scheduler" in ast.unparse(node.value)
    return False


def places_that_start_airflow_unmarked(root: Path = TESTS_DIR) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        where = path.relative_to(root).as_posix()
        if where in DEFINES_STARTERS:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or not _calls_a_starter(node):
                continue
            if (where, node.name) in STARTS_AIRFLOW:
                continue
            if node.name.startswith("test_") and _module_marked_scheduler(tree):
                continue
            found.append(f"{where}:{node.lineno} {node.name}")
    return found


def test_every_place_that_starts_airflow_is_marked_scheduler():
    assert places_that_start_airflow_unmarked() == [], (
        "starts an Airflow but make test-fast would run it: add the fixture to conftest.STARTS_AIRFLOW, or mark the "
        "test's module pytest.mark.scheduler"
    )


def test_the_check_finds_an_unmarked_starter(tmp_path):
    """The check can fail: a test module that starts an Airflow without the marker is found, a marked one is not."""
    body = "\n\ndef test_it(tmp_path):\n    with standalone_airflow({}, tmp_path, ()):\n        pass\n"
    (tmp_path / "test_unmarked.py").write_text("import pytest\npytestmark = pytest.mark.integration" + body)
    (tmp_path / "test_marked.py").write_text(
        "import pytest\npytestmark = [pytest.mark.integration, pytest.mark.scheduler]" + body
    )
    assert places_that_start_airflow_unmarked(tmp_path) == ["test_unmarked.py:4 test_it"]
