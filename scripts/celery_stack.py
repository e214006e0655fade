"""The local backend under Celery, the way MWAA runs Airflow: Postgres, Redis, and a scheduler, a DAG
processor, an API server, a triggerer and Celery workers, each its own process.

    with CeleryStack(work_dir, env).start() as stack:      # tests/celery/conftest.py, bench/celery.py
        client = AirflowClient(stack.api_url, stack.airflow_home)

This module is the one source of truth for that deployment: ``SETTINGS``, ``endpoints()``,
``processes()`` and the versions below are what the Celery tier runs, and
``tests/celery/test_compose_topology.py`` holds docker-compose.yaml to the same values.

- Postgres: the server binaries on PATH (``initdb``, ``postgres``), in a temporary directory on a free
  port. Postgres refuses to run as root, so under root it runs as the ``postgres`` account (else
  ``nobody``). Two databases: ``airflow`` (metadata, and Celery's task results) and ``mlflow`` (MLflow's
  tracking store: several workers write it at once, which a SQLite file does not take).
- Redis: ``redis-server`` from the distribution (``scripts/ensure-redis`` installs it), on a free port.
- Airflow: ``airflow db migrate``, then every component with the same settings, started in a working
  directory of their own (never the project's), as MWAA's containers are. The workers share one
  host here, so each serves its task logs on a port of its own (in separate containers 8793 each).
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
for folder in ("plugins", "tools"):
    if str(PROJECT_ROOT / folder) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT / folder))

from retrain.paths import job_python  # noqa: E402
from retrain.runner import free_port, stop_process_group  # noqa: E402
from retrain_tools.airflow_api import AirflowClient, wait_until  # noqa: E402

AIRFLOW_IMAGE = "apache/airflow:3.3.1-python3.12"  # the Dockerfile's base: MWAA 3.3.1's Airflow and Python
POSTGRES_MAJOR = "15"  # docker-compose's postgres image; the local server binaries must be this major
REDIS_SERIES = "7.0"  # docker-compose's redis image; Debian 12's redis-server is 7.0.x
DB_USER = DB_PASSWORD = "airflow"
WORKERS = ("worker1", "worker2")

# Settings every Airflow process shares, here and in docker-compose.yaml (same keys, same values).
SETTINGS: dict[str, str] = {
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "30",  # MWAA's defaults
    "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "50",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "5",  # MWAA's mw1.small runs 5 tasks per worker
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,alice:op,bob:op",
    "RETRAIN_BACKEND": "local",
}
# MLflow's schema, created once before any job writes (several first writers would race to create it).
MLFLOW_SCHEMA_INIT = "import mlflow, os; mlflow.MlflowClient(os.environ['MLFLOW_TRACKING_URI']).search_experiments()"
# Settings that must be equal in every process (tokens the scheduler signs, the API server checks),
# with values of the deployment's own: random per stack here, from the environment in docker-compose.
SHARED_SECRETS = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY")


def endpoints(db: str, broker: str, api: str) -> dict[str, str]:
    """Where the processes find each other, given ``host:port`` of Postgres, Redis and the API server."""
    return {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{DB_USER}:{DB_PASSWORD}@{db}/airflow",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{DB_USER}:{DB_PASSWORD}@{db}/airflow",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://{broker}/0",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{api}/execution/",
        # the driver named: SQLAlchemy 2.1 (the job env's) defaults postgresql:// to psycopg 3, which it does not hold
        "MLFLOW_TRACKING_URI": f"postgresql+psycopg2://{DB_USER}:{DB_PASSWORD}@{db}/mlflow",
    }


def processes(workers: tuple[str, ...] = WORKERS) -> dict[str, list[str]]:
    """Each process's ``airflow`` sub-command; a worker's Celery hostname is its name at the host."""
    commands = {
        "api-server": ["api-server"],
        "scheduler": ["scheduler"],
        "dag-processor": ["dag-processor"],
        "triggerer": ["triggerer"],
    }
    for name in workers:
        commands[name] = ["celery", "worker", "--celery-hostname", f"{name}@%h"]
    return commands


def server_version(binary: str) -> str:
    """``X.Y.Z`` of a server binary on PATH (``postgres``, ``redis-server``)."""
    path = shutil.which(binary)
    if path is None:
        hint = "run scripts/ensure-redis" if binary == "redis-server" else "install the PostgreSQL server binaries"
        raise FileNotFoundError(f"{binary} is not on PATH: the Celery deployment needs it ({hint})")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"(\d+\.\d+(?:\.\d+)?)", out)
    if found is None:
        raise RuntimeError(f"cannot read the version of {path} from {out!r}")
    return found.group(1)


def _unprivileged_account() -> pwd.struct_passwd | None:
    """The account Postgres runs as when this process is root (Postgres refuses root); None otherwise."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and there is neither a 'postgres' nor a 'nobody' account to run Postgres as")


class Postgres:
    """A throwaway Postgres server on 127.0.0.1 with the ``airflow`` and ``mlflow`` databases."""

    DATABASES = ("airflow", "mlflow")

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.dir: Path | None = None

    def start(self) -> Postgres:
        account = _unprivileged_account()
        # Not under the caller's directory: pytest's temp root is root-only (0700), unreadable to 'postgres'.
        self.dir = Path(tempfile.mkdtemp(prefix="retrain-postgres-"))
        prefix: list[str] = []
        if account is not None:
            os.chown(self.dir, account.pw_uid, account.pw_gid)
            prefix = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups"]
        data = self.dir / "data"
        init = subprocess.run(
            [
                *prefix,
                "initdb",
                "-D",
                str(data),
                "-U",
                DB_USER,
                "--auth=trust",
                "--no-sync",
                "--no-locale",
                "-E",
                "UTF8",
            ],
            capture_output=True,
            text=True,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout[-2000:]}{init.stderr[-2000:]}")
        log = open(self.log_dir / "postgres.log", "wb")  # noqa: SIM115 - the process writes to it after this returns
        # fsync off: a throwaway test server; compose's keeps Postgres's durable defaults.
        self.proc = subprocess.Popen(
            [
                *prefix,
                "postgres",
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-k",
                str(self.dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "max_connections=200",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._accepts, 60, f"Postgres on port {self.port} (log: {self.log_dir / 'postgres.log'})", every=0.3)
        conn = self._connect("postgres")
        try:
            conn.autocommit = True  # CREATE DATABASE runs outside a transaction
            with conn.cursor() as cursor:
                for name in self.DATABASES:
                    cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self

    def _connect(self, database: str):
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user=DB_USER, dbname=database, connect_timeout=5)

    def _accepts(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"Postgres exited with {self.proc.returncode}; see {self.log_dir / 'postgres.log'}")
        try:
            self._connect("postgres").close()
            return True
        except Exception:  # noqa: BLE001 - psycopg2.OperationalError while it starts
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, timeout=30, sig=signal.SIGINT)  # SIGINT: fast shutdown, clients or not
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    """A throwaway redis-server on 127.0.0.1, no persistence."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> Redis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not on PATH: run scripts/ensure-redis (make test does)")
        log = open(self.log_dir / "redis.log", "wb")  # noqa: SIM115 - the process writes to it after this returns
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.log_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._pong, 30, f"Redis on port {self.port} (log: {self.log_dir / 'redis.log'})", every=0.2)
        return self

    def _pong(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see {self.log_dir / 'redis.log'}")
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, timeout=15)


def _session_secrets() -> dict[str, str]:
    from cryptography.fernet import Fernet

    return {
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
    }


class CeleryStack:
    """Postgres, Redis and Airflow's processes under CeleryExecutor, rooted in ``root``; a context manager.

    ``env`` is the base environment of every Airflow process: the project's settings (RETRAIN_*,
    AIRFLOW_HOME, the DAGs and plugins folders, PATH with the Airflow venv first). The stack adds
    ``SETTINGS``, ``endpoints()`` and per-session secrets, and exposes the result as ``self.env``.
    """

    def __init__(self, root: Path, env: dict[str, str], workers: tuple[str, ...] = WORKERS) -> None:
        self.root, self.workers = root, workers
        self.logs = root / "logs"
        self.cwd = root / "cwd"  # the processes' working directory: nothing may depend on it
        self.airflow_home = Path(env["AIRFLOW_HOME"])
        self.postgres, self.redis = Postgres(self.logs), Redis(self.logs)
        self.api_port = free_port()
        self.api_url = f"http://localhost:{self.api_port}"
        self.base_env = env
        self.env: dict[str, str] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.timings: dict[str, float] = {}
        self._previous_sigterm = None

    def __enter__(self) -> CeleryStack:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 600) -> CeleryStack:
        """Start everything and wait until the API server reports a healthy scheduler, DAG processor and
        triggerer, and every worker is ready. Stops what it started if any of it fails."""
        started = time.monotonic()
        for directory in (self.logs, self.cwd, self.airflow_home):
            directory.mkdir(parents=True, exist_ok=True)
        if threading.current_thread() is threading.main_thread():
            # Python dies of SIGTERM without running `finally`: turn it into SystemExit so the
            # caller's cleanup (and so stop()) runs, and a killed test run leaves no server behind.
            self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            self.postgres.start()
            self.redis.start()
            self.env = {
                **self.base_env,
                **SETTINGS,
                **_session_secrets(),
                **endpoints(
                    f"127.0.0.1:{self.postgres.port}", f"127.0.0.1:{self.redis.port}", f"localhost:{self.api_port}"
                ),
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            }
            self.timings["services_s"] = time.monotonic() - started
            self._migrate()
            self.timings["migrate_s"] = time.monotonic() - started - self.timings["services_s"]
            for name, command in processes(self.workers).items():
                self._launch(name, command)
            self._wait_ready(timeout)
            self.timings["ready_s"] = time.monotonic() - started
        except BaseException:
            self.stop()
            raise
        return self

    def _migrate(self) -> None:
        """Airflow's metadata schema and MLflow's, at once (MLflow's first writers would otherwise race to create
        it)."""
        mlflow_init = subprocess.Popen(
            [str(job_python()), "-c", MLFLOW_SCHEMA_INIT],
            env=self.env,
            cwd=self.cwd,
            stdout=open(self.logs / "mlflow-init.log", "wb"),  # noqa: SIM115 - the process writes to it after this returns
            stderr=subprocess.STDOUT,
        )
        migrate = subprocess.run(
            ["airflow", "db", "migrate"], env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=600
        )
        (self.logs / "db-migrate.log").write_text(migrate.stdout + migrate.stderr)
        if mlflow_init.wait(timeout=300) != 0:
            raise RuntimeError(f"MLflow's tracking schema on Postgres failed; see {self.logs / 'mlflow-init.log'}")
        if migrate.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{(migrate.stdout + migrate.stderr)[-3000:]}")

    def _launch(self, name: str, command: list[str]) -> None:
        env = self.env
        if name in self.workers:  # one host: a log-server port each (the second would fail to bind 8793)
            env = {**env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - the process writes to it after this returns
        self.procs[name] = subprocess.Popen(
            ["airflow", *command], env=env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _wait_ready(self, timeout: float) -> None:
        client = AirflowClient(self.api_url, self.airflow_home)

        def ready() -> bool:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            health = client._request("GET", "/api/v2/monitor/health", auth=False)
            components = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            if any((health.get(c) or {}).get("status") != "healthy" for c in components):
                return False
            return all(
                f"{name}@" in text and " ready." in text
                for name in self.workers
                for text in [self.log_tail(name, 200_000)]
            )

        wait_until(ready, timeout, f"the Celery deployment (logs: {self.logs})")
        wait_until(
            lambda: (self.airflow_home / "simple_auth_manager_passwords.json.generated").exists(),
            60,
            "generated passwords",
        )

    def log_tail(self, name: str, size: int = 5000) -> str:
        """The last ``size`` characters of a process's log."""
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else ""

    def tasks_received(self, worker: str) -> list[str]:
        """What a worker executed, one line per task: Celery's 'Executing workload' lines of its log."""
        return [
            line
            for line in (self.logs / f"{worker}.log").read_text(errors="replace").splitlines()
            if "Executing workload in Celery" in line
        ]

    def stop(self) -> None:
        """Stop every process (workers first, so no task starts while the rest goes), then Redis and Postgres."""
        for name in [*self.workers, *[n for n in self.procs if n not in self.workers]]:
            proc = self.procs.get(name)
            if proc is not None:  # even one that exited: what it started may still run
                stop_process_group(proc, timeout=30)
        self.procs.clear()
        self.redis.stop()
        self.postgres.stop()
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None


def _exit_on_sigterm(signum: int, frame) -> None:
    raise SystemExit(128 + signum)
