"""The local runner: start a job script with the job environment's interpreter.

``local_job`` is the local backend's one mapping of a backend-neutral ``JobSpec``: every store key
becomes a path under the local store, every project file a path in the checkout. ``run_job`` then
starts the script under the same contract the managed services use:

- training (SageMaker script mode): ``SM_CHANNEL_<NAME>``, ``SM_MODEL_DIR``,
  ``SM_OUTPUT_DATA_DIR``, ``SM_HPS``, hyperparameters as ``--key value``, and
  ``SM_CHECKPOINT_DIR`` standing in for ``/opt/ml/checkpoints`` so a restart resumes;
- processing: input and output directories passed as arguments (``/opt/ml/processing/…``
  on SageMaker);
- glue: ``--key value`` job arguments, Spark on ``local[*]``.

Output is streamed line by line to the caller's logger, so it lands in the Airflow task log.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from retrain.jobs import JobSpec, Key, ProjectFile, StoreRoot, Upstream, Value
from retrain.paths import INCLUDE_DIR, PROJECT_ROOT, job_python, mlflow_tracking_uri
from retrain.store import LocalStore, WriteOnceError
from retrain.tracking import ARTIFACT_ROOT_ENV, artifact_root

PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class LocalJob:
    """One job as the local runner starts it: a script, its arguments and its directories, all local paths."""

    name: str
    kind: Literal["glue", "training", "processing"]
    script: Path
    arguments: dict[str, str]
    result_file: Path
    channels: dict[str, Path] = field(default_factory=dict)
    model_dir: Path | None = None
    output_dir: Path | None = None
    checkpoint_dir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    workdir: Path | None = None  # the try's own output directory, claimed exclusively by the runner


def tracking_env(store: LocalStore) -> dict[str, str]:
    """MLflow settings of a job: the tracking URI, and the artifact root under this store (never the job's working
    directory)."""
    return {"MLFLOW_TRACKING_URI": mlflow_tracking_uri(), ARTIFACT_ROOT_ENV: artifact_root(store.root)}


def local_value(value: Value, store: LocalStore) -> str:
    """One argument or environment value of a spec, as a local string."""
    if isinstance(value, Key):
        return str(store.path(value.key))
    if isinstance(value, Upstream):
        return value.location
    if isinstance(value, ProjectFile):
        return str(PROJECT_ROOT / value.path)
    if isinstance(value, StoreRoot):
        return str(store.root)
    return value


def local_job(spec: JobSpec, store: LocalStore) -> LocalJob:
    """Map a backend-neutral spec onto the local store: the local backend's one place for that mapping."""

    def path(key: str | None) -> Path | None:
        return None if key is None else store.path(key)

    env = {name: local_value(value, store) for name, value in spec.env.items()}
    return LocalJob(
        name=spec.name,
        kind=spec.kind,
        script=PROJECT_ROOT / spec.script,
        arguments={name: local_value(value, store) for name, value in spec.arguments.items()},
        result_file=store.path(spec.result_key),
        channels={name: store.path(key) for name, key in spec.channels.items()},
        model_dir=path(spec.model_key),
        output_dir=path(spec.output_key),
        checkpoint_dir=path(spec.checkpoint_key),
        env={**(tracking_env(store) if spec.tracking else {}), **env},
        workdir=path(spec.workdir_key),
    )


def claim(directory: Path, owner: dict[str, Any]) -> Path:
    """Create a try's directory exclusively and record who owns it; refuse if it exists."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir()
    except FileExistsError:
        raise WriteOnceError(
            f"{directory}: exists already; a try's outputs are write-once and a new try writes to its own directory"
        ) from None
    owner = {**owner, "pid": os.getpid(), "host": socket.gethostname(), "claimed_at": datetime.now(UTC).isoformat()}
    (directory / ".owner.json").write_text(json.dumps(owner, sort_keys=True) + "\n")
    return directory


class JobFailed(RuntimeError):
    """A job script exited non-zero; the message carries its last output lines."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    @property
    def bad_input(self) -> bool:
        """The job rejected its input (exit code EX_DATAERR): the same input fails again, so don't retry."""
        return self.exit_code == os.EX_DATAERR


def job_environment(spec: LocalJob) -> dict[str, str]:
    """Environment variables of the container contract for this job."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "_AIRFLOW", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(INCLUDE_DIR), str(PROJECT_ROOT / "plugins")]),
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    if spec.kind == "training":
        env["SM_HPS"] = json.dumps(spec.arguments, sort_keys=True)
        env["SM_CURRENT_HOST"] = "algo-1"
        env["SM_HOSTS"] = json.dumps(["algo-1"])
        env["SM_NUM_CPUS"] = str(os.cpu_count() or 1)
        env["SM_NUM_GPUS"] = "0"
        for name, path in spec.channels.items():
            env[f"SM_CHANNEL_{name.upper()}"] = str(path)
        if spec.model_dir:
            env["SM_MODEL_DIR"] = str(spec.model_dir)
        if spec.output_dir:
            env["SM_OUTPUT_DATA_DIR"] = str(spec.output_dir)
        if spec.checkpoint_dir:
            env["SM_CHECKPOINT_DIR"] = str(spec.checkpoint_dir)
    env.update(spec.env)
    return env


def command_line(spec: LocalJob) -> list[str]:
    """The job interpreter, the script and ``--key value`` arguments in a stable order."""
    args = [str(job_python()), str(spec.script)]
    for key, value in spec.arguments.items():
        args += [f"--{key}", value]
    return args


def _die_with_parent() -> None:
    """In the job's process, before exec: the kernel kills it when the task process that started it dies
    (a killed scheduler or worker must not leave a job writing where the next try writes)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def die_with_parent_process() -> None:
    """In a task process (Airflow's task runner): the kernel kills it the moment its supervisor dies.

    Airflow puts the task runner in its own process group, so killing the scheduler's group leaves it
    re-parented to init, with its job still writing checkpoints. With this, a killed supervisor takes
    the task runner with it, and the job (which dies with the task runner) with that. A parent that
    died before this call leaves the process orphaned already (re-parented to init): refused."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() == 1:
        raise JobFailed("the process that started this task is gone (re-parented to init); not starting a job")


@contextmanager
def exclusive(directory: Path | None, what: str) -> Iterator[int | None]:
    """Hold an exclusive lock on ``directory`` (its ``.lock``) while a job uses it.

    The lock's descriptor is passed to the job, so a job that outlived its task still holds
    it: a second try then fails fast instead of writing into the same checkpoint."""
    if directory is None:
        yield None
        return
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise JobFailed(f"{directory}: {what} is in use by {holder}; two tries never write one place") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}".encode(), 0)
        yield fd
    finally:
        os.close(fd)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, for the servers the tests, the demo and the bench start."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_process_group(proc: subprocess.Popen, timeout: float = 60, sig: int = signal.SIGTERM) -> None:
    """Stop a server started with ``start_new_session=True`` and everything it started: ``sig``, then SIGKILL.

    Descendants are listed before the signal, so one that left the group (or outlived its parent
    and was re-parented) is killed too: a Celery worker's task processes must not outlive a test."""
    descendants = _descendants(proc.pid)
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()
    for child in descendants:
        with contextlib.suppress(Exception):  # psutil.NoSuchProcess: it is gone, as it should be
            child.kill()  # psutil checks the process is still the one listed (pid reuse)


def _descendants(pid: int) -> list:
    """Every process below ``pid`` (psutil handles), or none where psutil is unavailable."""
    try:
        import psutil

        return psutil.Process(pid).children(recursive=True)
    except Exception:  # noqa: BLE001 - ImportError, or the process is already gone
        return []


def make_read_only(directory: Path) -> None:
    """A finished model directory is never written again: registered versions point to it."""
    for path in directory.rglob("*"):
        if path.is_file():
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def run_job(spec: LocalJob, log: logging.Logger | None = None, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one job to completion, streaming its output; return the JSON it wrote as its result.

    The try's work directory is claimed exclusively first (write-once outputs), the
    checkpoint directory is locked for the job's lifetime, and the job dies with its task."""
    log = log or logging.getLogger("retrain.runner")
    python = job_python()
    if not python.exists():
        raise JobFailed(
            f"job environment interpreter not found at {python}; run `make setup` (or set RETRAIN_JOB_PYTHON)"
        )
    if spec.workdir:
        claim(spec.workdir, {"job": spec.name, **(owner or {})})
    for directory in (spec.model_dir, spec.output_dir, spec.result_file.parent):
        if directory:
            directory.mkdir(parents=True, exist_ok=True)
    cmd = command_line(spec)
    log.info("starting %s job: %s", spec.kind, " ".join(cmd))
    started = time.monotonic()
    tail: list[str] = []
    with (
        exclusive(spec.checkpoint_dir, "the checkpoint directory") as lock_fd,
        subprocess.Popen(
            cmd,
            env=job_environment(spec),
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            preexec_fn=_die_with_parent,
            pass_fds=() if lock_fd is None else (lock_fd,),
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            log.info("[%s] %s", spec.name, line)
            tail = (tail + [line])[-20:]
        code = proc.wait()
    elapsed = time.monotonic() - started
    if code != 0:
        raise JobFailed(
            f"{spec.name} exited with code {code} after {elapsed:.1f}s; last output:\n" + "\n".join(tail), code
        )
    if not spec.result_file.is_file():
        raise JobFailed(f"{spec.name} finished but wrote no result file at {spec.result_file}")
    log.info("%s finished in %.1fs", spec.name, elapsed)
    if spec.kind == "training" and spec.model_dir:
        make_read_only(spec.model_dir)
    result = json.loads(spec.result_file.read_text())
    result.setdefault("job_seconds", round(elapsed, 3))
    return result
