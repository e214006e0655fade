"""README command 1: the life of a model on the local backend, under a real Airflow (intent by default).

    make demo                                  # or: source scripts/env.sh && python scripts/demo.py
    make demo MODEL=<name>                     # any model with sample_data in its config
    make demo DEMO_ARGS=--manual-approval      # you approve in the Airflow UI instead
    make demo DEMO_ARGS=--keep-running         # leave Airflow up afterwards

It lands the model's sample data (``sample_data`` in its config: raw partitions over the
intervals that end with the latest complete one, and the golden version), makes sure every
model has its DAG file, starts ``airflow standalone`` (scheduler, API server, DAG
processor, triggerer; LocalExecutor on SQLite) and runs ``retrain_<model>`` for the last
two seeded intervals:

1. the earlier interval, triggered with its data interval: no champion yet, so only the
   absolute gate applies; approved and promoted to champion;
2. the latest interval, created by the scheduler itself: it faces run 1's model as
   champion under the full gate, paired significance included; approved, then deployed in
   stages on the model server's endpoint (shadow, canary, 100%) while the demo replays
   the model's raw partitions against it, and promoted.

The model server (``bin/retrain serve``) starts first and stays up afterwards: the promoted
version answers on ``/endpoints/<model>/invocations``. The demo's deployment windows are
short (``DEMO_DEPLOYMENT``): it runs the model's config with that section replaced, from
``$RETRAIN_HOME/demo-config/`` (``RETRAIN_CONFIG_DIR``); everything else is the shipped config.

Approvals go through Airflow's REST ``hitlDetails`` endpoint as the model's first assigned
approver (``alice`` for intent). Running it again retrains both intervals as new, forced
runs against the current champion.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from retrain import ledger
from retrain.config import ConfigError, load_model
from retrain.intervals import latest_complete_interval
from retrain.jobs import latest_try, run_key
from retrain.paths import PROJECT_ROOT, job_python
from retrain.runner import stop_process_group
from retrain.store import LocalStore, WriteOnceError
from retrain.tasks import headline_metrics
from retrain_tools import serving
from retrain_tools.airflow_api import AirflowClient, configured_api_url, wait_until
from retrain_tools.dagfiles import sync as sync_dag_files
from retrain_tools.seed import SeedError, describe, seed
from retrain_tools.serving import traffic
from retrain_tools.standalone import standalone_environment, start_standalone

DEMO_DEPLOYMENT = {
    "shadow": {"min_requests": 30, "max_minutes": 5},
    "canary": {"percent": 20, "min_requests": 20, "window_minutes": 1},
    "poll_seconds": 5,
}
"""The demo's windows: minutes, not the hour of a production canary. Traffic: TRAFFIC_RPS requests a second."""
TRAFFIC_RPS = 10


def demo_config_dir(root: Path) -> Path:
    """Every shipped config, with ``deployment`` replaced by DEMO_DEPLOYMENT (merged over the config's own), under
    ``root/demo-config``; returns that directory."""
    import yaml

    from retrain.paths import config_dir

    out = root / "demo-config"
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(config_dir().glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        own = data.get("deployment") or {}
        merged = {**own, **DEMO_DEPLOYMENT}
        for section in ("shadow", "canary"):
            merged[section] = {**own.get(section, {}), **DEMO_DEPLOYMENT[section]}
        data["deployment"] = merged
        header = f"# {path.name} as shipped, but for its deployment windows (scripts/demo.py, DEMO_DEPLOYMENT)\n"
        (out / path.name).write_text(header + yaml.safe_dump(data, sort_keys=False))
    return out


def with_user(users: str, name: str) -> str:
    """The simple auth manager's user list, with ``name`` added (as an op user) if missing."""
    names = {entry.split(":")[0] for entry in users.split(",") if entry}
    return users if name in names else f"{users},{name}:op"


def with_api_options(text: str, options: dict[str, str]) -> str:
    """airflow.cfg's text with ``key = value`` under ``[api]`` for each option: the option's line (set, else commented
    out) replaced in place, else added under the section header, or in a new ``[api]`` section at the end."""
    lines = text.splitlines(keepends=True)
    header = next((i for i, line in enumerate(lines) if line.strip() == "[api]"), None)
    if header is None:
        lines += ([] if not lines or lines[-1].endswith("\n") else ["\n"]) + ["\n[api]\n"]
        header = len(lines) - 1
    end = next((i for i in range(header + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    for key, value in options.items():
        found = [i for i in range(header + 1, end) if re.match(rf"\s*{key}\s*=", lines[i])] or [
            i for i in range(header + 1, end) if re.match(rf"\s*#\s*{key}\s*=", lines[i])
        ]
        if found:
            lines[found[0]] = f"{key} = {value}\n"
        else:
            lines.insert(header + 1, f"{key} = {value}\n")
            end += 1
    return "".join(lines)


def remember_port(port: int) -> Path:
    """Make ``port`` the API server's port in Airflow's own config (``[api] port`` and ``base_url`` in airflow.cfg,
    which
    Airflow writes first if missing), so that bin/retrain, alert links, `make ui` and Airflow's own links find it."""
    from airflow.configuration import AIRFLOW_CONFIG, write_default_airflow_configuration_if_needed

    write_default_airflow_configuration_if_needed()
    path = Path(AIRFLOW_CONFIG)
    path.write_text(with_api_options(path.read_text(), {"port": str(port), "base_url": f"http://localhost:{port}"}))
    return path


def start_airflow(port: int, approver: str) -> subprocess.Popen:
    home = Path(os.environ["AIRFLOW_HOME"])
    env = {
        **os.environ,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": with_user(
            os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin"), approver
        ),
    }
    host = standalone_environment(env)["AIRFLOW__API__HOST"]
    print(f"starting airflow standalone, API server on {host} (log, owner-only: {home / 'standalone.log'})")
    return start_standalone(env, home / "standalone.log")


class Demo:
    """Drives runs through the REST API and narrates what happens."""

    def __init__(
        self, client: AirflowClient, dag_id: str, started: float, manual: bool, port: int, approver: str
    ) -> None:
        self.client, self.dag_id, self.started, self.manual, self.port = client, dag_id, started, manual, port
        self.approver = approver
        self.traffic: threading.Thread | None = None
        self.stop_traffic = threading.Event()
        self.traffic_summary: dict = {}

    def start_traffic(self, model: str) -> None:
        """Replay the model's raw partitions against its endpoint, in the background, until stop_traffic."""

        def run() -> None:
            self.traffic_summary = traffic(model, TRAFFIC_RPS, 24 * 3600, stop_event=self.stop_traffic)

        self.traffic = threading.Thread(target=run, daemon=True)
        self.traffic.start()
        self.say(f"traffic: {TRAFFIC_RPS} requests/s from the raw partitions (bin/retrain traffic) during the windows")

    def end_traffic(self) -> None:
        if self.traffic:
            self.stop_traffic.set()
            self.traffic.join()
            s = self.traffic_summary
            self.say(f"traffic: {s['sent']} requests, status {s['status']}, answered by {s['versions']}")
            self.traffic = None
            self.stop_traffic = threading.Event()

    def say(self, text: str) -> None:
        print(f"  [{time.monotonic() - self.started:6.1f}s] {text}")

    def follow(self, run_id: str, timeout: float) -> str:
        """Print task state changes; answer the approval request; return the run's final state."""
        seen: dict[str, str] = {}
        answered = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ti in self.client.task_instances(self.dag_id, run_id):
                state = ti["state"] or "none"
                if seen.get(ti["task_id"]) != state and state != "none":
                    seen[ti["task_id"]] = state
                    self.say(f"{ti['task_id']:<16} {state}")
                if ti["task_id"] == "observe_shadow" and state == "deferred" and self.traffic is None:
                    self.start_traffic(self.dag_id.removeprefix("retrain_"))
                if ti["task_id"] == "await_approval" and state == "awaiting_input" and not answered:
                    answered = (
                        self.approve(run_id)
                        if self.manual or self.client.wait_for_approval_request(self.dag_id, run_id)
                        else False
                    )
            state = self.client.dag_run(self.dag_id, run_id)["state"]
            if state in ("success", "failed"):
                self.end_traffic()
                return state
            time.sleep(2)
        raise TimeoutError(f"{self.dag_id} run {run_id} did not finish within {timeout:.0f}s")

    def approve(self, run_id: str) -> bool:
        if self.manual:
            url = f"http://localhost:{self.port}/dags/{self.dag_id}/runs/{run_id}/tasks/await_approval/required_actions"
            self.say(f"waiting for a person to approve or reject in the Airflow UI: {url}")
            return True
        approver = AirflowClient(self.client.base_url, self.client.airflow_home).login(self.approver)
        approver.respond(
            self.dag_id, run_id, "await_approval", "Approve", {"reason": "demo: gate passed, approved by the demo user"}
        )
        self.say(f"approved as '{self.approver}' (the model's first assigned approver) through REST hitlDetails")
        return True


def output(run_dir: Path, task: str, name: str) -> Path | None:
    """A file the newest try of a task wrote, or None."""
    directory = latest_try(run_dir / task)
    return directory / name if directory and (directory / name).is_file() else None


def gate_table(run_dir: Path) -> str:
    from retrain.gate import format_table

    path = output(run_dir, "gate_on_metrics", "gate.json")
    return format_table(json.loads(path.read_text())) if path else "(no gate: the run stopped earlier)"


def registry_status(model: str) -> dict:
    """The registry's view (aliases, versions, verified ledger), asked of the job environment where mlflow lives."""
    out = subprocess.run(
        [str(job_python()), str(PROJECT_ROOT / "plugins" / "retrain" / "registry.py"), "status", "--model", model],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": f"{PROJECT_ROOT / 'include'}:{PROJECT_ROOT / 'plugins'}"},
    )
    return json.loads(out.stdout)


def serving_check(model: str) -> str:
    """Ask the endpoint once, and print what serves it and which version answered."""
    try:
        client = serving.running()
        if client is None:
            print("\nmodel server: not running (bin/retrain serve)")
            return ""
        print("\n" + serving.describe(client))
        instance = serving.requests_for(model)[0]
        code, headers, body = client.invoke(model, [instance])
        version = headers.get("x-retrain-version")
        print(f"  POST {client.url}/endpoints/{model}/invocations -> {code}, answered by v{version}: {body}")
        return version or ""
    except Exception as exc:  # noqa: BLE001 - the summary reports, it does not fail the demo
        print(f"\nmodel server: {exc}")
        return ""


def outcome(model: str, run_id: str, state: str) -> tuple[str, bool]:
    """How a run ended, and whether the demo counts it as working: a run the gate rejected failed in
    Airflow (gate_on_metrics fails, nothing is registered) but did what the pipeline is for."""
    if state == "success":
        return "promoted", True
    stages = [e for e in ledger.read_entries(LocalStore(), model) if e.get("run_id") == run_id]
    if stages and stages[-1]["action"] == "auto_rollback":  # the stage did its job: the champion serves
        return f"approved, then rolled back automatically: {stages[-1]['reason']}", True
    if stages and stages[-1]["action"] == "inconclusive":
        return f"approved, but its deployment was inconclusive: {stages[-1]['reason']}", False
    path = output(LocalStore().path(f"runs/{model}/{run_key(run_id)}"), "gate_on_metrics", "gate.json")
    gate = json.loads(path.read_text()) if path else None
    if gate and gate["decision"] == "reject":
        failed = [c["name"] for c in gate["criteria"] if c["verdict"] == "fail"]
        return f"rejected by the gate ({', '.join(failed)}), nothing registered", True
    return f"{state}: see the task logs in the Airflow UI", False


def summary(model: str, runs: list[tuple[str, str]], wall: float) -> tuple[int | None, str]:
    """What a person wants to see afterwards, read from the runs' artifacts, MLflow and the ledger."""
    store = LocalStore()
    print(f"\n=== retrain_{model}: summary ===")
    for run_id, state in runs:
        run = store.path(f"runs/{model}/{run_key(run_id)}")
        read = lambda task, name, run=run: json.loads(path.read_text()) if (path := output(run, task, name)) else None  # noqa: E731
        built, trained = read("build_dataset", "result.json"), read("train_model", "model/training_summary.json")
        metrics, registered = read("evaluate_model", "metrics.json"), read("register_model", "result.json")
        decision = read("await_approval", "decision.json")
        print(f"\n--- run {run_id}: {state}")
        if built:
            c = built["counts"]
            print(
                f"dataset {built['dataset_version']}: train={c['train']} validation={c['validation']}, "
                f"drift {0.0 if built.get('reused') else built['drift']['score']:.3f} vs "
                f"{built['previous_version'] or 'none'}"
            )
        if trained:
            print(
                f"training: {trained['wall_seconds']:.0f}s, {trained['samples_per_second']:.0f} samples/s, weights "
                f"{trained['weights_digest'][:16]}…"
            )
        if metrics:
            ch, champ, base = metrics["challenger"], metrics.get("champion"), metrics.get("baseline")

            def figures(block, task=metrics["task"]):
                return ", ".join(f"{name} {block[name]:.4f}" for name in headline_metrics(task))

            vs = f" | champion v{champ['version']}: {figures(champ)}" if champ else " | no champion"
            vs += f" | baseline ({base.get('base_model', 'untrained')}): {figures(base)}" if base else ""
            print(
                f"golden {metrics['golden_version']} (n={metrics['n_examples']}): challenger {figures(ch)}, "
                f"p50 {ch['latency_ms']['p50']:.1f} ms, p99 {ch['latency_ms']['p99']:.1f} ms{vs}"
            )
            # the report with the gate verdict on top, else the evaluation's own
            print(
                "report: "
                f"{output(run, 'gate_on_metrics', 'report.html') or output(run, 'evaluate_model', 'report.html')}"
            )
        print(gate_table(run))
        if registered:
            print(f"registered: {registered['model_uri']} (alias challenger)")
        if decision:
            who = (decision.get("responded_by_user") or {}).get("id", "timeout")
            print(f"approval: {decision['decision']} by {who}")
    info = registry_status(model)
    print(
        f"\naliases: champion=v{info['champion']} "
        f"challenger={'v' + str(info['challenger']) if info['challenger'] else '-'}"
    )
    print("versions: " + ", ".join(f"v{v['version']} ({v['approval']})" for v in info["versions"]))
    print(
        f"ledger {store.path(f'ledger/{model}.jsonl')} "
        f"({'verified' if info['ledger_verified'] is True else info['ledger_verified']}):"
    )
    for e in info["ledger"]:
        origin = f"v{e['from_version']}" if e["from_version"] else "-"
        print(
            f"  #{e['seq']} {e['action']:<8} {origin} -> v{e['to_version']} by {e['actor']}  ({e['reason']})  hash "
            f"{e['hash'][:12]}…"
        )
    answered = serving_check(model)
    print(f"\nwall time: {wall:.0f}s")
    print(f"mlflow:     {os.environ['MLFLOW_TRACKING_URI']}  (make ui, then http://localhost:5000)")
    print(
        f"airflow UI: make ui, then {configured_api_url()} (passwords: "
        ".airflow/simple_auth_manager_passwords.json.generated)"
    )
    print(f"roll back:  bin/retrain rollback {model} --reason '…'   (or trigger rollback_{model} in the UI)")
    return info["champion"], answered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="intent", help="which model to run (default intent); its config needs sample_data"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="API server port (default: Airflow's own [api] port, 8080 unless "
        "configured); another one is written into airflow.cfg, so bin/retrain and the alert links find it",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for each run (default 1800)")
    parser.add_argument(
        "--manual-approval", action="store_true", help="leave the approval to a person in the Airflow UI"
    )
    parser.add_argument("--keep-running", action="store_true", help="leave Airflow running afterwards for the UI")
    args = parser.parse_args()
    started = time.monotonic()
    store = LocalStore()
    os.environ["RETRAIN_CONFIG_DIR"] = str(demo_config_dir(store.root))  # Airflow and the server inherit it
    try:
        config = load_model(args.model)
        seeded = seed(store, config)
    except (ConfigError, SeedError, WriteOnceError) as exc:
        print(f"demo: cannot land the sample data of {args.model!r}: {exc}", file=sys.stderr)
        return 1
    print(describe(config, store, seeded))
    for name in sync_dag_files()["written"]:
        print(f"wrote the DAG file dags/{name} for its config")
    (first, second), unit = seeded["intervals"][-2:], config.schedule.cadence.removesuffix("ly")
    approver = config.approval.assigned_users[0]

    configured = urlsplit(configured_api_url()).port or 8080
    args.port = args.port or configured
    if args.port != configured:
        print(f"Airflow's API server port is now {args.port}: [api] port and base_url in {remember_port(args.port)}")
    server = serving.start()
    print(f"model server at {server.url} (bin/retrain serve; it stays up: bin/retrain serve --stop)")
    proc = start_airflow(args.port, approver)
    try:
        client = AirflowClient(f"http://localhost:{args.port}", Path(os.environ["AIRFLOW_HOME"]))
        wait_until(client.healthy, 180, "the Airflow API server and scheduler")
        client.login("admin")
        wait_until(lambda: client.dag(config.dag_id) is not None, 180, f"{config.dag_id} to be parsed")
        demo = Demo(client, config.dag_id, started, args.manual_approval, args.port, approver)
        # The scheduler creates the second run itself when it is the latest complete interval and has no run yet.
        fresh = (
            client.run_for_interval(config.dag_id, first[0]) is None
            and client.run_for_interval(config.dag_id, second[0]) is None
            and second == latest_complete_interval(config.schedule.calendar, datetime.now(UTC))
        )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        first_id = f"{unit}_{first[0]:%Y-%m-%d}" if fresh else f"demo_{stamp}_{unit}_{first[0]:%Y-%m-%d}"
        # run_after orders queued runs: the first goes first, the scheduler's second run waits (max_active_runs=1)
        client.trigger(
            config.dag_id,
            first_id,
            first[0],
            first[1],
            {} if fresh else {"force": True},
            logical_date=first[0] if fresh else None,
            run_after=first[1],
        )
        client.set_paused(config.dag_id, False)
        print(f"\nrun 1: {first_id}, data interval {first[0]:%Y-%m-%d} .. {first[1]:%Y-%m-%d}")
        runs = [(first_id, demo.follow(first_id, args.timeout))]
        if fresh:
            print(
                f"\nrun 2: the scheduler's run of the latest complete {unit} {second[0]:%Y-%m-%d} .. "
                f"{second[1]:%Y-%m-%d}"
            )
            second_id = wait_until(lambda: client.run_for_interval(config.dag_id, second[0]), 120, "the scheduled run")[
                "dag_run_id"
            ]
        else:
            second_id = f"demo_{stamp}_{unit}_{second[0]:%Y-%m-%d}"
            client.trigger(config.dag_id, second_id, second[0], second[1], {"force": True})
            print(f"\nrun 2: {second_id} (forced re-run of {second[0]:%Y-%m-%d} .. {second[1]:%Y-%m-%d})")
        runs.append((second_id, demo.follow(second_id, args.timeout)))
        champion, answered = summary(config.name, runs, time.monotonic() - started)
        if args.keep_running:
            print("\nAirflow keeps running (Ctrl-C to stop).")
            proc.wait()
        outcomes = [outcome(config.name, run_id, state) for run_id, state in runs]
        outcomes.append(
            (f"the endpoint answers with v{answered}, the champion", True)
            if champion is not None and answered == str(champion)
            else (f"the endpoint answered with {answered or 'nothing'}, not the champion v{champion}", False)
        )
        said = [f"run {i}: {text}" for i, (text, _) in enumerate(outcomes[:-1], 1)]
        print("\n" + "; ".join([*said, outcomes[-1][0]]))
        return 0 if all(ok for _, ok in outcomes) else 1
    finally:
        if proc.poll() is None:
            stop_process_group(proc)


if __name__ == "__main__":
    sys.exit(main())
