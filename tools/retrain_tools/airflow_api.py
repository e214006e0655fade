"""A small client for Airflow 3's public REST API (``/api/v2``), stdlib only.

Used by the demo, the CLI and the integration tests; it logs in through the simple
auth manager's ``/auth/token`` endpoint with the passwords Airflow generated.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retrain.paths import api_base_url

START_COMMAND = "make ui"
"""How this project starts Airflow (``airflow standalone`` on the port of Airflow's own config)."""


class ApiError(RuntimeError):
    """A REST call failed; the message carries the method, path, status and body."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:500]}")
        self.status = status


def _database_busy(exc: ApiError) -> bool:
    """The API server's two answers to a metadata DB that is busy (SQLite under a running scheduler)."""
    text = str(exc)
    return (exc.status == 503 and "locked" in text) or (exc.status == 500 and '"Database error"' in text)


class AirflowNotRunning(ConnectionError):
    """Nothing answers at the API server's URL (an OSError, so polling loops keep counting it as 'not yet')."""

    def __init__(self, base_url: str, reason: str = "") -> None:
        super().__init__(f"Airflow is not running at {base_url}; start it with `{START_COMMAND}`")
        self.base_url, self.reason = base_url, reason


def configured_api_url(environ: Mapping[str, str] | None = None) -> str:
    """``api_base_url`` as Airflow configures it, read without importing Airflow (the CLI runs in the job environment):
    ``AIRFLOW__API__<KEY>`` in the environment, else ``[api] <key>`` in ``$AIRFLOW_CONFIG`` or
    ``$AIRFLOW_HOME/airflow.cfg``."""
    environ = os.environ if environ is None else environ
    home = Path(environ.get("AIRFLOW_HOME") or "~/airflow").expanduser()
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    with contextlib.suppress(
        configparser.Error, OSError, UnicodeDecodeError
    ):  # a file Airflow could not read either: its defaults
        parser.read(environ.get("AIRFLOW_CONFIG") or home / "airflow.cfg")
    return api_base_url(
        lambda key: environ.get(f"AIRFLOW__API__{key.upper()}") or parser.get("api", key, fallback=None)
    )


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 1.0) -> Any:
    """Poll ``predicate`` until it returns something truthy; errors count as 'not yet'."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ApiError) as exc:
            last_error = exc
        time.sleep(every)
    raise TimeoutError(
        f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last_error})" if last_error else "")
    )


class AirflowClient:
    """Calls the public REST API as one user."""

    def __init__(self, base_url: str, airflow_home: Path) -> None:
        self.base_url = base_url.rstrip("/")
        self.airflow_home = airflow_home
        self.token: str | None = None

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if auth and self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise ApiError(method, path, exc.code, exc.read().decode(errors="replace")) from None
        except urllib.error.URLError as exc:  # no connection: refused, unknown host, connect timeout
            raise AirflowNotRunning(self.base_url, str(exc.reason)) from None
        return json.loads(payload) if payload else None

    def password(self, username: str) -> str:
        """The password Airflow's simple auth manager generated for ``username``."""
        path = self.airflow_home / "simple_auth_manager_passwords.json.generated"
        passwords = json.loads(path.read_text())
        if username not in passwords:
            raise KeyError(f"{path}: no user {username!r}; configured users: {', '.join(sorted(passwords))}")
        return passwords[username]

    def login(self, username: str, password: str | None = None) -> AirflowClient:
        body = {"username": username, "password": password or self.password(username)}
        self.token = self._request("POST", "/auth/token", body, auth=False)["access_token"]
        return self

    def healthy(self) -> bool:
        health = self._request("GET", "/api/v2/monitor/health", auth=False)
        return health.get("scheduler", {}).get("status") == "healthy"

    def _get_or_none(self, path: str) -> dict | None:
        """GET, with 404 meaning 'not there (yet)'."""
        try:
            return self._request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def dag(self, dag_id: str) -> dict | None:
        return self._get_or_none(f"/api/v2/dags/{dag_id}")

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def dag_runs(self, dag_id: str) -> list[dict]:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after&limit=100")["dag_runs"]

    def run_for_interval(self, dag_id: str, interval_start: datetime) -> dict | None:
        """The first run whose data interval starts at ``interval_start``, if any."""
        for run in self.dag_runs(dag_id):
            start = run.get("data_interval_start")
            if start and datetime.fromisoformat(start.replace("Z", "+00:00")) == interval_start:
                return run
        return None

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def trigger(
        self,
        dag_id: str,
        run_id: str,
        start: datetime,
        end: datetime,
        conf: dict | None = None,
        logical_date: datetime | None = None,
        run_after: datetime | None = None,
    ) -> dict:
        """Trigger a run over an explicit data interval. logical_date is unique per DAG, so a
        re-run of an interval defaults to "now" as its logical date; run_after orders queued runs."""
        body = {
            "dag_run_id": run_id,
            "logical_date": (logical_date or datetime.now(UTC)).isoformat(),
            "data_interval_start": start.isoformat(),
            "data_interval_end": end.isoformat(),
            "conf": conf or {},
        }
        if run_after is not None:
            body["run_after"] = run_after.isoformat()
        return self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)

    def create_backfill(
        self,
        dag_id: str,
        from_date: datetime,
        to_date: datetime,
        max_active_runs: int = 1,
        reprocess_behavior: str = "none",
        on_busy: Callable[[str], Any] | None = None,
        attempts: int = 20,
    ) -> dict:
        """A backfill of every interval whose logical date is in [from_date, to_date] (the UI's "Backfill").

        On SQLite the API server refuses a backfill while another process writes the metadata
        DB (HTTP 503 "Database is locked", nothing created), or, when the lock meets its audit-log
        write first, fails with HTTP 500 "Database error"; those two alone are retried. The backfill is
        created in a transaction of its own, so a retry after one that did commit gets HTTP 409
        (AlreadyRunningBackfill), never a second backfill."""
        body = {
            "dag_id": dag_id,
            "from_date": from_date.isoformat(),
            "to_date": to_date.isoformat(),
            "max_active_runs": max_active_runs,
            "reprocess_behavior": reprocess_behavior,
        }
        for attempt in range(1, attempts + 1):
            try:
                return self._request("POST", "/api/v2/backfills", body)
            except ApiError as exc:
                if not _database_busy(exc) or attempt == attempts:
                    raise
                if on_busy:
                    on_busy(f"the metadata database is busy (SQLite); retrying ({attempt}/{attempts})")
                time.sleep(min(5.0, 0.5 * attempt))
        raise AssertionError("unreachable")

    def import_errors(self) -> list[dict]:
        """DAG files that failed to import, with their stack traces (what the UI's banner lists)."""
        return self._request("GET", "/api/v2/importErrors?limit=100")["import_errors"]

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str) -> dict | None:
        """The human-in-the-loop request of a task, or None while the task has not asked yet."""
        return self._get_or_none(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails")

    def respond(self, dag_id: str, run_id: str, task_id: str, option: str, params_input: dict | None = None) -> dict:
        """Answer a human-in-the-loop request as the logged-in user (HTTP 403 if not assigned)."""
        body = {"chosen_options": [option], "params_input": params_input or {}}
        return self._request(
            "PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails", body
        )

    def trigger_manual(self, dag_id: str, conf: dict) -> dict:
        """Trigger a run with no data interval (for DAGs without a schedule, e.g. rollback)."""
        return self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})

    def wait_for_task(
        self, dag_id: str, run_id: str, task_id: str, states: tuple[str, ...], timeout: float = 900
    ) -> str:
        """Poll until a task reaches one of ``states`` (or the run ends); return the task's state."""

        def reached():
            ti = {t["task_id"]: t["state"] for t in self.task_instances(dag_id, run_id)}.get(task_id)
            if ti in states or self.dag_run(dag_id, run_id)["state"] in ("success", "failed"):
                return ti or "none"
            return None

        return wait_until(reached, timeout, f"{dag_id}.{task_id} in {run_id} to reach {states}", every=2)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900) -> dict[str, str]:
        """Poll until the run finishes; return each task's final state."""
        wait_until(
            lambda: self.dag_run(dag_id, run_id)["state"] in ("success", "failed"),
            timeout,
            f"{dag_id} run {run_id}",
            every=2,
        )
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def wait_for_approval_request(
        self, dag_id: str, run_id: str, task_id: str = "await_approval", settle: float = 3.0, timeout: float = 900
    ) -> bool:
        """Wait until a HITL task is parked in ``awaiting_input`` and its parking worker has exited.

        Airflow 3.3.1 races when an answer arrives before the scheduler has processed the
        executor event of the worker that parked the task: the answer re-queues the task, the
        late "success" event then looks like an external state change, and the scheduler fails
        the task. People never answer that fast; scripted answers (the demo, tests) wait for
        the parking worker to exit, then one scheduler loop. The worker's pid is only checked
        when it ran on this host (LocalExecutor, or Celery workers beside this process): a pid
        recorded on another host or in a container names some unrelated process here, so there
        the wait is ``REMOTE_SETTLE_S`` instead (the task process's exit, Celery's result and a
        scheduler loop).
        """
        if self.wait_for_task(dag_id, run_id, task_id, ("awaiting_input",), timeout) != "awaiting_input":
            return False
        ti = next(t for t in self.task_instances(dag_id, run_id) if t["task_id"] == task_id)
        if ti.get("pid") and is_this_host(ti.get("hostname")):
            wait_until(
                lambda: not _process_alive(ti["pid"]), 120, f"the worker that parked {task_id} to exit", every=0.5
            )
        else:
            settle = max(settle, REMOTE_SETTLE_S)
        time.sleep(settle)
        states = {t["task_id"]: t["state"] for t in self.task_instances(dag_id, run_id)}
        return states.get(task_id) == "awaiting_input"


REMOTE_SETTLE_S = 15.0


def is_this_host(hostname: str | None) -> bool:
    """Whether a task instance's recorded hostname names this machine: Airflow records its own
    ``getfqdn()``, the canonical name ``getaddrinfo`` gives for ``gethostname()``."""
    if not hostname:
        return False
    names = {socket.gethostname(), socket.getfqdn()}
    with contextlib.suppress(OSError):
        names.update(
            info[3]
            for info in socket.getaddrinfo(socket.gethostname(), None, 0, socket.SOCK_DGRAM, 0, socket.AI_CANONNAME)
        )
    return hostname in names - {""}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
