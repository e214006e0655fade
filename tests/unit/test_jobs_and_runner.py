"""Job specs and the local runner's container contract, without running a job."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from retrain.config import load_model
from retrain.jobs import (
    Key,
    RunContext,
    Upstream,
    build_dataset_spec,
    evaluate_model_spec,
    register_model_spec,
    train_model_spec,
)
from retrain.runner import (
    JobFailed,
    claim,
    command_line,
    exclusive,
    job_environment,
    local_job,
    run_job,
    stop_process_group,
)
from retrain.store import WriteOnceError

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"

CTX = RunContext(
    dag_id="retrain_intent",
    run_id="scheduled__2026-09-14T00:00:00+00:00",
    interval_start=datetime(2026, 9, 14, tzinfo=UTC),
    interval_end=datetime(2026, 9, 21, tzinfo=UTC),
    upstream={
        "snapshot_raw": {"manifest_path": "/m.json"},
        "build_dataset": {"dataset_version": "ds-abc", "drift": {"score": 0.5}},
        "train_model": {"model_dir": "/model", "mlflow_run_id": "r1", "weights_digest": "d" * 64},
    },
)


def test_registration_tags_the_base_weights_digest_of_an_adapter_only_model(store):
    """llm_lora registers the adapter alone: its version is tagged with the base model's digest from the training
    summary; a model whose summary records none (intent) gets no such tag."""
    gated = {"gate_on_metrics": {"digest": "g" * 64, "report_path": "/r.html", "gate_path": "/g.json"}}
    figures = {
        "challenger": {"format_exact_match": 0.6, "format_valid": 1.0, "macro_f1": 0.9, "accuracy": 0.9},
        "metrics_path": "/m",
    }
    for model, summary, expected in (
        ("llm_lora", {"base_model_digest": "b" * 64}, {"base_model_digest": "b" * 64}),
        ("intent", {}, {}),
    ):
        upstream = {
            **CTX.upstream,
            **gated,
            "evaluate_model": figures,
            "train_model": {**CTX.upstream["train_model"], "dataset_version": "ds-abc", **summary},
        }
        tags = json.loads(
            register_model_spec(load_model(model), replace(CTX, upstream=upstream)).arguments["tags-json"]
        )
        assert {k: v for k, v in tags.items() if k == "base_model_digest"} == expected, model


def test_run_key_is_path_safe():
    assert CTX.run_key == "scheduled__2026-09-14T00_00_00_00_00"


def test_training_spec_follows_script_mode(store):
    spec = local_job(train_model_spec(load_model("intent"), CTX), store)
    env = job_environment(spec)
    assert env["SM_CHANNEL_TRAIN"].endswith("datasets/intent/ds-abc/train")
    assert env["SM_CHANNEL_VALIDATION"].endswith("datasets/intent/ds-abc/validation")
    assert env["SM_MODEL_DIR"] == str(spec.model_dir) and env["SM_CHECKPOINT_DIR"] == str(spec.checkpoint_dir)
    assert json.loads(env["SM_HPS"])["seed"] == "42"
    cmd = command_line(spec)
    assert cmd[cmd.index("--dataset-version") + 1] == "ds-abc"
    assert cmd[cmd.index("--learning-rate") + 1] == "0.0001"
    lineage = json.loads(env["RETRAIN_LINEAGE"])
    assert set(lineage) >= {
        "dataset_version",
        "golden_version",
        "base_model",
        "git_sha",
        "config_digest",
        "airflow_dag_id",
        "airflow_run_id",
    }
    assert lineage["airflow_run_id"] == CTX.run_id
    assert not any(key.startswith("AIRFLOW") for key in env)  # jobs know nothing about Airflow


def test_evaluation_and_etl_specs(store):
    config = load_model("intent")
    evaluate = evaluate_model_spec(config, CTX)
    assert evaluate.arguments["golden-dir"] == Key("golden/intent/v1", "dir")  # a key with its kind, on every backend
    assert local_job(evaluate, store).arguments["golden-dir"] == str(store.path("golden/intent/v1"))
    assert "champion-dir" not in evaluate.arguments  # no ledger, no champion
    build = build_dataset_spec(config, CTX)
    assert build.kind == "glue" and build.arguments["raw-manifest"] == Upstream("/m.json")
    assert local_job(build, store).arguments["raw-manifest"] == "/m.json"


def test_runner_streams_output_and_reports_failures(store, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="retrain.runner")
    script = tmp_path / "job.py"
    script.write_text("import sys, json, os\nprint('hello from the job')\nsys.exit(int(os.environ.get('CODE', '0')))\n")
    monkeypatch.setenv("RETRAIN_JOB_PYTHON", sys.executable)
    from retrain.runner import LocalJob

    spec = LocalJob(
        name="probe",
        kind="processing",
        script=script,
        arguments={},
        result_file=tmp_path / "out" / "result.json",
        env={"CODE": "3"},
    )
    with pytest.raises(JobFailed, match=r"probe exited with code 3.*\n.*hello from the job"):
        run_job(spec)
    assert "hello from the job" in caplog.text
    ok = LocalJob(
        name="probe", kind="processing", script=script, arguments={}, result_file=tmp_path / "out" / "result.json"
    )
    with pytest.raises(JobFailed, match="wrote no result file"):
        run_job(ok)


def test_each_try_writes_its_own_directory_and_never_another_tries(store):
    config = load_model("intent")
    first, second = (local_job(train_model_spec(config, replace(CTX, try_number=n)), store) for n in (1, 2))
    assert first.workdir.name == "try-1" and second.workdir.name == "try-2"
    assert first.model_dir.is_relative_to(first.workdir) and second.model_dir.is_relative_to(second.workdir)
    claim(first.workdir, {"job": "train_model"})
    with pytest.raises(WriteOnceError, match=r"try-1: exists already; a try's outputs are write-once"):
        claim(first.workdir, {"job": "train_model"})
    assert json.loads((first.workdir / ".owner.json").read_text())["job"] == "train_model"


def test_checkpoints_are_shared_by_tries_only_for_the_same_config_and_dataset(store):
    config = load_model("intent")
    one, two = (local_job(train_model_spec(config, replace(CTX, try_number=n)), store) for n in (1, 2))
    assert one.checkpoint_dir == two.checkpoint_dir  # a retry resumes a killed try
    changed = config.model_copy(update={"description": "epochs changed"})
    other_data = replace(CTX, upstream={**CTX.upstream, "build_dataset": {"dataset_version": "ds-other"}})
    assert local_job(train_model_spec(changed, CTX), store).checkpoint_dir != one.checkpoint_dir
    assert local_job(train_model_spec(config, other_data), store).checkpoint_dir != one.checkpoint_dir
    assert json.loads(job_environment(one)["SM_HPS"])["config-digest"] == config.digest()


def test_a_locked_checkpoint_directory_refuses_a_second_try(tmp_path):
    with (
        exclusive(tmp_path / "ckpt", "the checkpoint directory"),
        pytest.raises(JobFailed, match=r"ckpt: the checkpoint directory is in use by pid \d+"),
        exclusive(tmp_path / "ckpt", "the checkpoint directory"),
    ):
        pass
    with exclusive(tmp_path / "ckpt", "the checkpoint directory"):  # released: free again
        pass


def sleeper_job(tmp_path: Path) -> Path:
    """A job script that writes its pid to $PIDFILE and sleeps two minutes: alive until something kills it."""
    job = tmp_path / "job.py"
    job.write_text("import os, time\nopen(os.environ['PIDFILE'], 'w').write(str(os.getpid()))\ntime.sleep(120)\n")
    return job


def test_a_job_dies_with_the_task_that_started_it(tmp_path):
    """Kill the task process (as a killed scheduler would): its job must not live on writing outputs."""
    job = sleeper_job(tmp_path)
    task = tmp_path / "task.py"
    task.write_text(
        textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        os.environ["RETRAIN_JOB_PYTHON"] = sys.executable
        from retrain.runner import LocalJob
        from retrain.runner import run_job
        run_job(LocalJob(name="sleeper", kind="processing", script=Path({str(job)!r}), arguments={{}},
                        result_file=Path({str(tmp_path / "out" / "result.json")!r}),
                        env={{"PIDFILE": {str(tmp_path / "pid")!r}}}))
    """)
    )
    proc = subprocess.Popen([sys.executable, str(task)], env={**os.environ, "PYTHONPATH": str(PLUGINS)})
    deadline = time.monotonic() + 60
    while not (tmp_path / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    job_pid = int((tmp_path / "pid").read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(job_pid):
        time.sleep(0.1)
    assert not _alive(job_pid), "the job outlived its task"


def test_a_task_and_its_job_die_with_the_supervisor_that_started_the_task(tmp_path):
    """Airflow's supervisor starts the task runner in a process group of its own: killing the scheduler's group leaves
    the task re-parented to init. Kill the supervisor: within 2 s neither the task nor its job may be alive."""
    job = sleeper_job(tmp_path)
    task = tmp_path / "task.py"
    task.write_text(
        textwrap.dedent(f"""
        import logging, os, sys
        from pathlib import Path
        from types import SimpleNamespace
        os.environ["RETRAIN_JOB_PYTHON"] = sys.executable
        from retrain.runner import LocalJob
        from retrain_airflow.operators import run_local_job
        spec = LocalJob(name="sleeper", kind="processing", script=Path({str(job)!r}), arguments={{}},
                        result_file=Path({str(tmp_path / "out" / "result.json")!r}),
                        env={{"PIDFILE": {str(tmp_path / "job.pid")!r}}})
        run_local_job(spec, logging.getLogger("task"), SimpleNamespace(dag_id="d", run_id="r", try_number=1))
    """)
    )
    supervisor = tmp_path / "supervisor.py"  # as Airflow's supervisor does it: the task in a process group of its own
    supervisor.write_text(
        f"import subprocess, sys, time\n"
        f"task = subprocess.Popen([sys.executable, {str(task)!r}], start_new_session=True)\n"
        f"open({str(tmp_path / 'task.pid')!r}, 'w').write(str(task.pid))\ntime.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, str(supervisor)], env={**os.environ, "PYTHONPATH": str(PLUGINS)})
    deadline = time.monotonic() + 90
    while not (tmp_path / "job.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = [int((tmp_path / name).read_text()) for name in ("task.pid", "job.pid")]
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(2)
        assert [pid for pid in pids if _alive(pid)] == [], "the task or its job outlived the supervisor by 2 s"
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_stopping_a_server_also_stops_what_left_its_process_group(tmp_path):
    """A server's grandchild that started its own session (as a Celery task's job could) is stopped with it."""
    server = tmp_path / "server.py"
    server.write_text(
        textwrap.dedent(f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c",
                          "import os, time; os.setsid(); "
                          "open({str(tmp_path / "pid")!r}, 'w').write(str(os.getpid())); time.sleep(120)"])
        time.sleep(120)
    """)
    )
    proc = subprocess.Popen([sys.executable, str(server)], start_new_session=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "pid").exists() or not (tmp_path / "pid").read_text():
        assert time.monotonic() < deadline, "the grandchild never started"
        time.sleep(0.1)
    escaped = int((tmp_path / "pid").read_text())
    assert os.getpgid(escaped) != proc.pid  # out of the server's group: killpg alone misses it
    stop_process_group(proc, timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(escaped):
        time.sleep(0.1)
    assert not _alive(escaped), "a process that left the group outlived the server"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:  # a zombie awaiting its reaper is dead too
        return handle.read().split()[2] != "Z"
