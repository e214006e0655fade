"""A crash of the whole of Airflow: ``airflow standalone``'s process group killed with SIGKILL while a model trains.

Airflow's supervisor starts each task runner in a process group of its own, so killing the scheduler's group does not
reach it: it must die with its supervisor, and the training job with it, leaving nothing that writes checkpoints on.
This test starts (and kills) an Airflow of its own, before the tier's shared stack starts (conftest orders it first).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from airflowstack import TinyProject, standalone_airflow, tiny_config
from retrain_tools.airflow_api import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.scheduler]  # it starts an Airflow of its own

MODEL = "intent_kill"


def _alive(process: psutil.Process) -> bool:
    """Running and not a zombie awaiting its reaper (psutil also checks the pid was not reused)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _the_try(lock: Path) -> list[psutil.Process]:
    """The processes of the training try: the task runner that holds the checkpoint lock (its pid is in the lock
    file), its supervisor, and its job."""
    runner = psutil.Process(int(lock.read_text().split()[1]))
    return [runner.parent(), runner, *runner.children(recursive=True)]


def _written_after(root: Path, moment: float) -> list[str]:
    return sorted(str(path) for path in root.rglob("*") if path.is_file() and path.stat().st_mtime > moment)


def test_killing_airflows_process_group_leaves_no_process_of_the_try_writing_on(tmp_path):
    project = TinyProject(tmp_path)
    tiny_config(project.config_dir, project.labels_file, MODEL, extra=(("epochs: 20", "epochs: 3000"),))
    project.land_two_weeks(MODEL)
    project.sync_dags()
    env = project.env(dict(os.environ))
    project.publish_golden(env, (MODEL,))
    runs = project.store_root / "runs" / MODEL
    with standalone_airflow(env, tmp_path, (f"retrain_{MODEL}",)) as client:
        client.set_paused(f"retrain_{MODEL}", False)
        checkpoint = wait_until(
            lambda: next(runs.glob("*/train_model/checkpoints/*/last.pt"), None), 900, "train_model's first checkpoint"
        )
        processes = _the_try(checkpoint.parent / ".lock")
        assert len(processes) >= 3, processes  # supervisor, task runner, job
        killed_at = time.time()
        os.killpg(client.process.pid, signal.SIGKILL)
        try:
            time.sleep(2)
            survivors = [(p.pid, " ".join(p.cmdline())[:120]) for p in processes if _alive(p)]
            assert survivors == [], f"alive 2 s after the kill: {survivors}"
            time.sleep(8)  # an orphan would have written another epoch's checkpoint by now
            assert _written_after(runs, killed_at + 2) == []
        finally:
            for process in processes:
                if _alive(process):
                    process.kill()
