"""Test-wide isolation: Airflow's home and the object store live in a temp dir, never in the repo's.

Markers. Every test carries its tier's marker, named after its directory under tests/ (``dags``, ``unit``,
``jobs``, ``integration``, ``celery``, ``aws``, ``mwaa``), and ``scheduler`` when it needs a running Airflow
(it uses one of the fixtures in ``STARTS_AIRFLOW``: the integration tier's ``airflow standalone``, the Celery
deployment, the aws end-to-end run's ``airflow standalone``), or carries ``pytest.mark.scheduler`` itself when it
starts an Airflow of its own (tests/integration/test_kill_local.py; tests/unit/test_markers.py checks that every
place that starts one is either). ``pytest_collection_modifyitems`` adds them;
pyproject.toml registers them. ``make test-fast`` is ``-m "not scheduler"``.

Skips. The summary lists each tier's skips with their reasons. Under ``CI=true`` a skipped test fails the
run (exit status 1) unless its reason contains one of ``SKIP_ALLOWED_IN_CI``, the short allow-list of
things CI machines may lack on purpose:
    "no GPU", "needs a GPU", "needs a CUDA GPU"   a test of GPU-only code on a machine without one.
A missing environment (the job venv, moto, cfn-lint, sagemaker-mlflow, MWAA's constraint files) is not on it:
CI builds all of them, so a skip for one of those means CI tested less than it claims.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import tempfile
from pathlib import Path

import pytest

from tiers import STARTS_AIRFLOW  # tests/ is on pytest's pythonpath

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="retrain-tests-"))
os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["RETRAIN_HOME"] = str(_SESSION_DIR / "store")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("RETRAIN_BACKEND", "local")
os.environ.pop("MLFLOW_TRACKING_URI", None)
# Every job, Airflow task and stack of the suite inherits this. Three xdist workers share 2 cores, so torch's OpenMP
# threads that spin while they wait for work take CPU from the other workers' processes: with them sleeping instead, a
# training test on a loaded machine used 20-25% fewer CPU seconds (22.8 and 27.6 s user against 17.2 and 19.1 s).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path):
    """A fresh, empty local object store."""
    from retrain.store import LocalStore

    return LocalStore(tmp_path / "store")


TESTS_DIR = Path(__file__).resolve().parent
TIERS = ("dags", "unit", "jobs", "integration", "celery", "aws", "mwaa")
SKIP_ALLOWED_IN_CI = ("no GPU", "needs a GPU", "needs a CUDA GPU")


def _tier(nodeid: str) -> str:
    """tests/<tier>/… -> <tier>; anything else (tests/*.py, a run from elsewhere) -> "other"."""
    parts = nodeid.split("::", 1)[0].split("/")
    return parts[1] if len(parts) >= 2 and parts[0] == "tests" and parts[1] in TIERS else "other"


SHARED_PER_TIER = frozenset({"integration", "celery", "mwaa"})
"""Tiers whose tests share one session-scoped stack (an Airflow, a Celery deployment, a built bundle and its venv):
under xdist each runs on one worker, as one group, so the stack starts once."""
XDIST_ORDER = (
    "integration",
    "jobs/test_llm_lora.py",
    "jobs/test_reranker.py",
    "celery",
    "aws/test_other_models_simulated.py",
    "jobs/test_embedding_adapter.py",
    "aws/test_pipeline_simulated.py",
    "jobs/test_build_dataset.py",
    "jobs/test_train.py",
    "aws/test_glue_simulated.py",
    "jobs/test_evaluate.py",
    "jobs/test_architectures.py",
    "jobs/test_sentiment.py",
    "mwaa",
    "jobs/test_tracking_store.py",
)
"""Under xdist, the groups that start first, longest first, so that no long group is left to start last on an otherwise
idle machine; every other group follows in collection order. The Makefile passes ``--no-loadscope-reorder``: xdist would
otherwise order groups by their number of tests and start the three stacks (integration, celery, the aws end-to-end
run) at once, each running Spark and training jobs on the same two cores."""


BACKGROUND_TIERS = frozenset({"jobs"})
"""Under xdist, tiers whose tests only compute (no timing criteria, no scheduler that must keep up) run at a lower CPU
priority (nice 10): the shared stacks on the critical path, the integration tier's Airflow above all, get the cores
first, and these tests fill the gaps. Their processes inherit it; the worker's own priority is restored after each
test (where the OS allows raising it again; otherwise later tests on that worker stay at nice 10)."""
BACKGROUND_NICE = 10


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not os.environ.get("PYTEST_XDIST_WORKER") or _tier(item.nodeid) not in BACKGROUND_TIERS:
        return (yield)
    before = os.getpriority(os.PRIO_PROCESS, 0)
    os.setpriority(os.PRIO_PROCESS, 0, max(before, BACKGROUND_NICE))
    try:
        return (yield)
    finally:
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, 0, before)


def _xdist_group(where: Path) -> str:
    """One work unit under xdist: a whole tier where it shares a stack, else one module (module-scoped fixtures, such
    as a trained model, stay on one worker). ``where`` is the test file's path under tests/."""
    return where.parts[0] if where.parts[0] in SHARED_PER_TIER else where.as_posix()


def _group_of(nodeid: str) -> str:
    """The work unit of a node id (``tests/<tier>/<module>.py::…``)."""
    path = Path(nodeid.split("::", 1)[0])
    return _xdist_group(path.relative_to("tests") if path.parts[:1] == ("tests",) else path)


@pytest.hookimpl(optionalhook=True)  # a hook of xdist's: unknown when it is not loaded (-p no:xdist)
def pytest_xdist_make_scheduler(config, log):
    """xdist's own scheduling by these work units. Its ``--dist loadgroup`` cannot do it under pytest 9: it renames a
    node id through ``item._nodeid``, which pytest 9 no longer reads, so every test became a unit of its own and each
    worker started its own copy of every shared stack."""
    from xdist.scheduler import LoadScopeScheduling

    class TierScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group_of(nodeid)

    return TierScheduling(config, log)


def _xdist_rank(group: str) -> int:
    return XDIST_ORDER.index(group) if group in XDIST_ORDER else len(XDIST_ORDER)


def pytest_collection_modifyitems(config, items):
    """Each test gets its tier's marker and ``scheduler`` when it needs a running Airflow; under xdist, the longest
    work units come first."""
    groups = {}
    for item in items:
        try:
            where = Path(item.path).resolve().relative_to(TESTS_DIR)
        except ValueError:
            continue
        if where.parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, where.parts[0]))
        if _starts_airflow(item):
            item.add_marker(pytest.mark.scheduler)
        groups[item.nodeid] = _xdist_group(where)
    if os.environ.get("PYTEST_XDIST_WORKER"):  # an xdist worker: every worker sorts alike, longest groups first
        items.sort(key=lambda item: _xdist_rank(groups.get(item.nodeid, "")))


def _starts_airflow(item) -> bool:
    """Whether one of the fixtures ``item`` uses (the closure, so through other fixtures too) is in STARTS_AIRFLOW."""
    fixture_info = getattr(item, "_fixtureinfo", None)
    for name, definitions in fixture_info.name2fixturedefs.items() if fixture_info else ():
        for definition in definitions:
            try:
                where = Path(inspect.getfile(definition.func)).resolve().relative_to(TESTS_DIR).as_posix()
            except (TypeError, ValueError):
                continue
            if (where, name) in STARTS_AIRFLOW:
                return True
    return False


_TIER_SECONDS: dict[str, float] = {}
_SKIPS: dict[str, list[tuple[str, str]]] = {}


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _record_skip(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPS.setdefault(_tier(report.nodeid), []).append((report.nodeid, _skip_reason(report)))


_TIER_SPAN: dict[str, tuple[float, float]] = {}


def pytest_runtest_logreport(report):
    """Time per tier (tests/<tier>/…): setup, call and teardown, shared fixtures included, summed over tests; the wall
    time from the tier's first start to its last end (tiers overlap under xdist); and the skips."""
    tier = _tier(report.nodeid)
    _TIER_SECONDS[tier] = _TIER_SECONDS.get(tier, 0.0) + report.duration
    first, last = _TIER_SPAN.get(tier, (report.start, report.stop))
    _TIER_SPAN[tier] = (min(first, report.start), max(last, report.stop))
    _record_skip(report)


def pytest_collectreport(report):
    """A whole module or directory skipped while it was collected (an importorskip at module level)."""
    _record_skip(report)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _skips_not_allowed() -> list[tuple[str, str]]:
    return [
        (nodeid, reason)
        for skips in _SKIPS.values()
        for nodeid, reason in skips
        if not any(allowed in reason for allowed in SKIP_ALLOWED_IN_CI)
    ]


def pytest_sessionfinish(session, exitstatus):
    """Under CI=true, a skip whose reason is not on SKIP_ALLOWED_IN_CI fails the run."""
    if _in_ci() and _skips_not_allowed() and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _TIER_SECONDS:
        terminalreporter.write_sep("-", "time per tier: summed over its tests, and first start to last end")
        for tier, seconds in sorted(_TIER_SECONDS.items()):
            first, last = _TIER_SPAN[tier]
            terminalreporter.write_line(f"{tier:<12} {seconds:8.1f} s   wall {last - first:8.1f} s")
    if not _SKIPS:
        terminalreporter.write_sep("-", "skips per tier: none")
    else:
        terminalreporter.write_sep("-", "skips per tier")
        for tier, skips in sorted(_SKIPS.items()):
            terminalreporter.write_line(f"{tier}: {len(skips)}")
            for nodeid, reason in skips:
                terminalreporter.write_line(f"  {nodeid}: {reason}")
        refused = _skips_not_allowed()
        if _in_ci() and refused:
            terminalreporter.write_line(
                f"CI=true: {len(refused)} skip(s) whose reason is not on SKIP_ALLOWED_IN_CI "
                f"{SKIP_ALLOWED_IN_CI} (tests/conftest.py): the run fails",
                red=True,
                bold=True,
            )
