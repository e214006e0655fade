"""DAG integrity: every model's DAG loads, has the designed shape and settings, and parses light."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

from dagshape import TASKS  # tests/ is on pytest's pythonpath
from retrain.config import config_paths, load_config
from retrain.intervals import WEEKDAYS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAGS_DIR = PROJECT_ROOT / "dags"
CONFIG_DIR = PROJECT_ROOT / "config" / "models"
HEAVY = ("torch", "transformers", "pandas", "pyspark", "sagemaker", "mlflow", "great_expectations")
EXPECTED_CHAIN = TASKS  # tests/dagshape.py
JOB_TASKS = ["validate_raw", "build_dataset", "train_model", "evaluate_model", "register_model", "promote_model"]


def declared_schedules(config_dir: Path = CONFIG_DIR) -> dict[str, dict]:
    """model -> the ``schedule`` its ``<config dir>/<model>.yaml`` declares, read from the YAML itself (not through
    retrain.config, which the DAGs use): what these tests expect, so a model added by config needs no edit here."""
    return {path.stem: yaml.safe_load(path.read_text())["schedule"] for path in sorted(config_dir.glob("*.yaml"))}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


@pytest.fixture(scope="module")
def configs():
    return [load_config(path) for path in config_paths()]


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_one_dag_per_model_config(dagbag, configs):
    assert configs, "no model configs found"
    for config in configs:
        assert config.dag_id in dagbag.dags


def test_shape_is_one_chain_of_verb_noun_tasks(dagbag, configs):
    for config in configs:
        dag = dagbag.dags[config.dag_id]
        assert [t.task_id for t in dag.topological_sort()] == EXPECTED_CHAIN
        for upstream, downstream in pairwise(EXPECTED_CHAIN):
            assert dag.get_task(downstream).upstream_task_ids == {upstream}


def test_settings_come_from_config(dagbag, configs):
    for config in configs:
        dag = dagbag.dags[config.dag_id]
        assert dag.max_active_runs == config.dag.max_active_runs == 1
        assert {"retrain", config.name, config.schedule.cadence} <= set(dag.tags)
        assert dag.owner == config.dag.owner
        assert dag.params["force"] is False
        for task_id in JOB_TASKS:
            task = dag.get_task(task_id)
            assert task.retries == config.dag.retries > 0
            assert task.retry_exponential_backoff == 2.0
            assert task.max_retry_delay == timedelta(seconds=config.dag.max_retry_delay_seconds)


def test_the_observe_tasks_retry_once_and_the_traffic_moving_tasks_never(dagbag, configs):
    """observe_shadow and observe_canary retry once, for Airflow's stale defer-exit event (factory.OBSERVE_RETRY); the
    traffic-moving tasks before them never retry."""
    for config in configs:
        dag = dagbag.dags[config.dag_id]
        assert [dag.get_task(t).retries for t in ("observe_shadow", "observe_canary")] == [1, 1]
        assert [dag.get_task(t).retries for t in ("deploy_shadow", "start_canary")] == [0, 0]


def test_approval_and_gate_come_from_config(dagbag, configs):
    for config in configs:
        dag = dagbag.dags[config.dag_id]
        approval = dag.get_task("await_approval")
        assert [u["id"] for u in approval.assigned_users] == config.approval.assigned_users
        assert approval.response_timeout == timedelta(hours=config.approval.response_timeout_hours)
        assert approval.defaults == ["Reject"]  # a timeout counts as a rejection
        assert dag.get_task("gate_on_metrics").on_failure_callback  # a rejection alerts


def test_rollback_dag_is_manual_and_needs_a_reason(dagbag, configs):
    for config in configs:
        dag = dagbag.dags[f"rollback_{config.name}"]
        assert type(dag.timetable).__name__ == "NullTimetable"  # triggered by hand only
        assert [t.task_id for t in dag.tasks] == ["rollback_model"]
        assert dag.is_paused_upon_creation is False  # one click, no unpausing first
        assert dag.params.get_param("reason").schema["minLength"] >= 1
        assert dag.params["target_version"] is None


def data_interval(dag, run_after: datetime):
    from airflow.serialization.encoders import coerce_to_core_timetable

    return coerce_to_core_timetable(dag.timetable).infer_manual_data_interval(run_after=run_after)


WEEKLY = {
    name: schedule.get("weekday", "monday")
    for name, schedule in declared_schedules().items()
    if schedule["cadence"] == "weekly"
}


@pytest.mark.parametrize(("model", "weekday"), sorted(WEEKLY.items()))
def test_weekly_schedules_have_week_long_data_intervals_on_their_weekday(dagbag, model, weekday):
    interval = data_interval(dagbag.dags[f"retrain_{model}"], datetime(2026, 10, 21, 9, 30, tzinfo=UTC))
    assert interval.end - interval.start == timedelta(days=7)
    assert (
        interval.start.weekday() == WEEKDAYS.index(weekday) and interval.start.hour == 0
    )  # sentiment runs a day after intent


def test_intent_and_sentiment_are_weekly_a_day_apart():
    """Issue 10's stagger, as shipped (the DAGs follow the configs: the test above)."""
    assert {name: WEEKLY.get(name) for name in ("intent", "sentiment")} == {"intent": "monday", "sentiment": "tuesday"}


SHIPPED = {
    "intent": "weekly",
    "sentiment": "weekly",
    "embedding_adapter": "monthly",
    "reranker": "monthly",
    "llm_lora": "quarterly",
}
"""The five models this project ships and their cadences (the weekly ones staggered, then monthly and quarterly).
More may be added by config alone: what the DAGs must be is derived from config/models/*.yaml (declared_schedules)."""


def cadence_of_cron(expression: str | None) -> str | None:
    """The cadence a retraining DAG's cron expression runs on (retrain.config.CADENCE_CRON, spelled out again here)."""
    if expression and re.fullmatch(r"0 0 \* \* [0-6]", expression):
        return "weekly"
    return {"0 0 1 * *": "monthly", "0 0 1 */3 *": "quarterly"}.get(expression or "")


def parsed(dag) -> dict:
    """What the cadence checks read of a parsed DAG: its tags and its cron expression (None without one)."""
    return {"tags": sorted(dag.tags), "cron": getattr(dag.timetable, "expression", None)}


def assert_a_retraining_and_a_rollback_dag_per_config_on_its_cadence(dags: dict[str, dict], config_dir: Path) -> None:
    """DAG id -> ``parsed(dag)`` against the configs: retrain_<model> and rollback_<model> for each and no other, the
    retraining DAG scheduled on the config's cadence and tagged with it."""
    cadences = {name: schedule["cadence"] for name, schedule in declared_schedules(config_dir).items()}
    assert cadences, f"no model configs in {config_dir}"
    assert sorted(d for d in dags if d.startswith("retrain_")) == sorted(f"retrain_{name}" for name in cadences)
    assert sorted(d for d in dags if d.startswith("rollback_")) == sorted(f"rollback_{name}" for name in cadences)
    assert {name: cadence_of_cron(dags[f"retrain_{name}"]["cron"]) for name in cadences} == cadences
    assert all(cadence in dags[f"retrain_{name}"]["tags"] for name, cadence in cadences.items())


def test_every_config_has_a_retraining_and_a_rollback_dag_on_its_cadence(dagbag, configs):
    cadences = {name: schedule["cadence"] for name, schedule in declared_schedules().items()}
    assert SHIPPED.items() <= cadences.items()  # the shipped five are all there, on their cadences
    assert {config.name: config.schedule.cadence for config in configs} == cadences
    assert_a_retraining_and_a_rollback_dag_per_config_on_its_cadence(
        {d: parsed(dag) for d, dag in dagbag.dags.items()}, CONFIG_DIR
    )


def test_a_model_added_by_config_alone_passes_these_tests_unedited(tmp_path):
    """A new model (intent copied with its own package group, monthly) beside intent: the checks above, derived from the
    configs, accept its DAGs; a hard-coded list of models would have failed until Python was edited."""
    from retrain_tools.dagfiles import sync

    good = (CONFIG_DIR / "intent.yaml").read_text()
    config_dir, dags_dir = tmp_path / "config", tmp_path / "dags"
    config_dir.mkdir()
    (config_dir / "intent.yaml").write_text(good)
    (config_dir / "intent150.yaml").write_text(
        good.replace("name: intent", "name: intent150")
        .replace("cadence: weekly", "cadence: monthly")
        .replace("model_package_group: retrain-intent\n", "model_package_group: retrain-intent150\n")
    )
    sync(config_dir, dags_dir)
    result = parse_in_fresh_interpreter(dags_dir, config_dir)
    assert result["errors"] == {}
    assert_a_retraining_and_a_rollback_dag_per_config_on_its_cadence(result["parsed"], config_dir)
    assert (result["parsed"]["retrain_intent150"]["cron"], result["parsed"]["retrain_intent"]["cron"]) == (
        "0 0 1 * *",
        "0 0 * * 1",
    )


@pytest.mark.parametrize("run_after", [datetime(2026, 11, 23, 9, 30, tzinfo=UTC), datetime(2027, 3, 2, tzinfo=UTC)])
def test_every_dag_interval_is_its_cadences_real_period(dagbag, configs, run_after):
    """Each shipped DAG's data interval is the whole week, month or quarter that seeding and backfills cut."""
    from retrain.intervals import latest_complete_interval

    lengths = {"weekly": {7}, "monthly": {28, 29, 30, 31}, "quarterly": {90, 91, 92}}
    for config in configs:
        interval = data_interval(dagbag.dags[config.dag_id], run_after)
        assert (interval.start, interval.end) == latest_complete_interval(config.schedule.calendar, run_after), (
            config.name
        )
        assert (interval.end - interval.start).days in lengths[config.schedule.cadence], config.name


@pytest.mark.parametrize(
    ("cadence", "run_after", "start", "end"),
    [
        ("monthly", datetime(2026, 11, 23, 9, 30), datetime(2026, 10, 1), datetime(2026, 11, 1)),  # 31 days
        ("monthly", datetime(2027, 3, 2), datetime(2027, 2, 1), datetime(2027, 3, 1)),  # 28 days
        ("quarterly", datetime(2026, 11, 23, 9, 30), datetime(2026, 7, 1), datetime(2026, 10, 1)),  # Q3: 92 days
        ("quarterly", datetime(2027, 1, 15), datetime(2026, 10, 1), datetime(2027, 1, 1)),  # Q4, across the year
    ],
)
def test_monthly_and_quarterly_intervals_span_the_whole_period(cadence, run_after, start, end):
    """A monthly or quarterly config gets a timetable whose data interval is exactly the calendar month or quarter."""
    from retrain.intervals import latest_complete_interval
    from retrain_airflow.factory import build_retraining_dag

    config = load_config(PROJECT_ROOT / "config" / "models" / "intent.yaml").model_copy(
        update={
            "schedule": load_config(PROJECT_ROOT / "config" / "models" / "intent.yaml").schedule.model_copy(
                update={"cadence": cadence}
            )
        }
    )
    utc = [moment.replace(tzinfo=UTC) for moment in (run_after, start, end)]
    interval = data_interval(build_retraining_dag(config, backend="local"), utc[0])
    assert (interval.start, interval.end) == (utc[1], utc[2])
    assert latest_complete_interval(config.schedule.calendar, utc[0]) == (
        utc[1],
        utc[2],
    )  # seeding cuts the same periods


def test_parsing_dags_loads_no_heavy_module():
    """Parse dags/ in a fresh interpreter where importing a heavy module raises, then check sys.modules."""
    code = textwrap.dedent(
        f"""
        import importlib.abc, json, sys
        HEAVY = {HEAVY!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in HEAVY:
                    raise ImportError(f"heavy module {{name}} imported at parse time")
        sys.meta_path.insert(0, Block())
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(DAGS_DIR)!r})
        print(json.dumps({{"errors": {{k: str(v) for k, v in bag.import_errors.items()}},
                          "dags": sorted(bag.dags), "heavy": [m for m in sys.modules if m.split(".")[0] in HEAVY]}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert "retrain_intent" in result["dags"]
    assert result["heavy"] == []


def test_every_config_has_its_generated_dag_file():
    from retrain_tools.dagfiles import check

    assert check() == []


def parse_in_fresh_interpreter(dags_dir: Path, config_dir: Path) -> dict:
    """DagBag over a DAGs folder in a new interpreter (the DAG processor's view), with its own config dir."""
    code = textwrap.dedent(
        f"""
        import json
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(dags_dir)!r})
        parsed = {{d: {{"tags": sorted(dag.tags), "cron": getattr(dag.timetable, "expression", None)}}
                  for d, dag in bag.dags.items()}}
        print(json.dumps({{"errors": {{k: str(v) for k, v in bag.import_errors.items()}}, "dags": sorted(bag.dags),
                          "parsed": parsed}}))
        """
    )
    env = {**os.environ, "RETRAIN_CONFIG_DIR": str(config_dir)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("cadence: weekly", "cadence: hourly", "schedule.cadence"),  # a wrong value
        ("  retries: 2\n", "  retries: 2\n  retires: 3\n", "dag.retires"),  # an unknown field
        ("max_active_runs: 1", "max_active_runs: one", "dag.max_active_runs"),  # a wrong type
    ],
)
def test_a_broken_config_is_an_import_error_of_its_own_dag_file(tmp_path, old, new, field):
    from retrain_tools.dagfiles import sync

    good = (PROJECT_ROOT / "config" / "models" / "intent.yaml").read_text()
    config_dir, dags_dir = tmp_path / "config", tmp_path / "dags"
    config_dir.mkdir()
    (config_dir / "intent.yaml").write_text(good)
    assert old in good
    (config_dir / "broken.yaml").write_text(good.replace("name: intent", "name: broken").replace(old, new))
    assert sync(config_dir, dags_dir)["written"] == ["retrain_broken.py", "retrain_intent.py"]
    result = parse_in_fresh_interpreter(dags_dir, config_dir)
    assert result["dags"] == ["retrain_intent", "rollback_intent"]
    assert list(result["errors"]) == [str(dags_dir / "retrain_broken.py")]
    error = result["errors"][str(dags_dir / "retrain_broken.py")]
    assert str(config_dir / "broken.yaml") in error and f"field '{field}'" in error


def test_bin_retrain_dags_errors_shows_a_broken_configs_import_error_without_a_metadata_db(
    tmp_path, monkeypatch, capsys
):
    """`airflow dags list-import-errors` needs `airflow db migrate` first; `bin/retrain dags errors` parses the folder
    itself."""
    from retrain_tools.cli import main
    from retrain_tools.dagfiles import sync

    good = (PROJECT_ROOT / "config" / "models" / "intent.yaml").read_text()
    config_dir, dags_dir, home = tmp_path / "config", tmp_path / "dags", tmp_path / "fresh-airflow-home"
    config_dir.mkdir()
    (config_dir / "intent.yaml").write_text(good)
    (config_dir / "broken.yaml").write_text(
        good.replace("name: intent", "name: broken").replace("cadence: weekly", "cadence: hourly")
    )
    sync(config_dir, dags_dir)
    monkeypatch.setenv("RETRAIN_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("AIRFLOW_HOME", str(home))  # a fresh clone's: no airflow.cfg, no metadata DB
    assert main(["dags", "errors", "--dags-dir", str(dags_dir)]) == 1
    out, err = capsys.readouterr()
    assert err.startswith(f"{dags_dir / 'retrain_broken.py'}:\n")
    assert f"{config_dir / 'broken.yaml'}: invalid model config" in err and "field 'schedule.cadence'" in err
    assert "retrain_intent.py" not in err
    assert out.strip() == f"{dags_dir}: 1 import error(s); 2 DAG(s) loaded: retrain_intent, rollback_intent"
    assert not (home / "airflow.db").exists()
    (config_dir / "broken.yaml").unlink()
    sync(config_dir, dags_dir)
    assert main(["dags", "errors", "--dags-dir", str(dags_dir)]) == 0
    assert (
        capsys.readouterr().out.strip()
        == f"{dags_dir}: 0 import error(s); 2 DAG(s) loaded: retrain_intent, rollback_intent"
    )


def test_two_models_sharing_a_model_package_group_are_both_their_dag_files_import_errors(tmp_path, monkeypatch):
    """A config copied from intent keeps `aws.model_package_group: retrain-intent`: each DAG file refuses it, naming
    both."""
    from retrain.config import ConfigError
    from retrain_airflow.factory import model_dags

    good = (PROJECT_ROOT / "config" / "models" / "intent.yaml").read_text()
    (tmp_path / "intent.yaml").write_text(good)
    (tmp_path / "intent150.yaml").write_text(good.replace("name: intent", "name: intent150"))
    monkeypatch.setenv("RETRAIN_CONFIG_DIR", str(tmp_path))
    for name, other in (("intent", "intent150"), ("intent150", "intent")):
        with pytest.raises(ConfigError) as info:
            model_dags(name)
        assert str(info.value).startswith(
            f"{tmp_path / (name + '.yaml')}: field 'aws.model_package_group' is 'retrain-intent', "
            f"as in {tmp_path / (other + '.yaml')}"
        )
    (tmp_path / "intent150.yaml").write_text(
        good.replace("name: intent", "name: intent150").replace(
            "model_package_group: retrain-intent\n", "model_package_group: retrain-intent150\n"
        )
    )
    assert sorted(model_dags("intent150")) == ["retrain_intent150", "rollback_intent150"]


def test_dag_file_sync_writes_removes_and_never_touches_hand_written_files(tmp_path):
    from retrain_tools.dagfiles import check, sync

    config_dir, dags_dir = tmp_path / "config", tmp_path / "dags"
    config_dir.mkdir()
    (config_dir / "a.yaml").write_text("name: a\n")
    dags_dir.mkdir()
    (dags_dir / "mine.py").write_text("# a hand-written DAG file\n")
    assert sync(config_dir, dags_dir) == {"written": ["retrain_a.py"], "removed": [], "unchanged": []}
    (config_dir / "a.yaml").rename(config_dir / "b.yaml")
    assert len(check(config_dir, dags_dir)) == 2  # b has no file, a's file has no config
    assert sync(config_dir, dags_dir) == {"written": ["retrain_b.py"], "removed": ["retrain_a.py"], "unchanged": []}
    (dags_dir / "retrain_c.py").write_text("# hand-written\n")
    (config_dir / "c.yaml").write_text("name: c\n")
    with pytest.raises(FileExistsError, match="hand-written"):
        sync(config_dir, dags_dir)
    assert (dags_dir / "mine.py").read_text() == "# a hand-written DAG file\n"


def test_every_failure_goes_through_the_models_notifier(dagbag, configs):
    from retrain_airflow.notifiers import FileAlertNotifier

    for config in configs:
        for dag_id in (config.dag_id, f"rollback_{config.name}"):
            for task in dagbag.dags[dag_id].tasks:
                callbacks = (
                    task.on_failure_callback
                    if isinstance(task.on_failure_callback, list)
                    else [task.on_failure_callback]
                )
                assert any(isinstance(c, FileAlertNotifier) and c.model_name == config.name for c in callbacks), (
                    dag_id,
                    task.task_id,
                )


def test_job_tasks_run_one_at_a_time_across_runs(dagbag, configs):
    """Backfills create many runs at once; each heavy job task runs at most once at a time per DAG."""
    for config in configs:
        dag = dagbag.dags[config.dag_id]
        assert {t: dag.get_task(t).max_active_tis_per_dag for t in JOB_TASKS} == dict.fromkeys(JOB_TASKS, 1)


def test_unknown_backend_fails_clearly(monkeypatch):
    from retrain.config import ConfigError
    from retrain_airflow.factory import selected_backend

    monkeypatch.setenv("RETRAIN_BACKEND", "gcp")
    with pytest.raises(ConfigError, match="RETRAIN_BACKEND='gcp'"):
        selected_backend()
