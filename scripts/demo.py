"""README command 1: retrain_intent end to end on the local backend, under a real Airflow.

    make demo                      # or: source scripts/env.sh && python scripts/demo.py

It lands the sample data (raw weekly partitions ending with the latest complete week,
and golden v1), starts ``airflow standalone`` (scheduler, API server, DAG processor,
triggerer; LocalExecutor on SQLite), unpauses ``retrain_intent`` so the scheduler creates
the run for the latest complete week, follows it through the REST API and prints a
summary. Run it again and it triggers a fresh forced run of the same interval.
Flags: ``--keep-running`` leaves Airflow up for the UI; ``--port`` moves the API server.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow_client import AirflowClient, wait_until  # scripts/airflow_client.py

from retrain.config import load_model
from retrain.jobs import RunContext
from retrain.paths import PROJECT_ROOT
from retrain.seed import main as seed_main
from retrain.store import LocalStore

MODEL = "intent"


def latest_complete_week(now: datetime) -> tuple[datetime, datetime]:
    """The Monday-to-Monday interval that ended most recently (what the scheduler runs next)."""
    end = datetime(now.year, now.month, now.day, tzinfo=timezone.utc) - timedelta(days=now.weekday())
    return end - timedelta(weeks=1), end


def start_airflow(port: int) -> subprocess.Popen:
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "standalone.log", "ab")
    env = {**os.environ, "AIRFLOW__API__PORT": str(port), "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/"}
    print(f"starting airflow standalone (log: {home / 'standalone.log'})")
    return subprocess.Popen(["airflow", "standalone"], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop_airflow(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def follow_run(client: AirflowClient, dag_id: str, run_id: str, started: float, timeout: float) -> str:
    """Print each task's state changes until the run finishes; return the run's final state."""
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ti in client.task_instances(dag_id, run_id):
            state = ti["state"] or "none"
            if seen.get(ti["task_id"]) != state:
                seen[ti["task_id"]] = state
                print(f"  [{time.monotonic() - started:6.1f}s] {ti['task_id']:<16} {state}")
        state = client.dag_run(dag_id, run_id)["state"]
        if state in ("success", "failed"):
            return state
        time.sleep(2)
    raise TimeoutError(f"{dag_id} run {run_id} did not finish within {timeout:.0f}s")


def summary(run_id: str, wall: float) -> None:
    """What a person wants to see after a run, read from the run's artifacts in the store."""
    store = LocalStore()
    run = store.path(f"runs/{MODEL}/{RunContext('', run_id, datetime.now(), datetime.now()).run_key}")
    read = lambda rel: json.loads((run / rel).read_text()) if (run / rel).is_file() else None  # noqa: E731
    raw, built = read("raw_manifest.json"), read("build_dataset/result.json")
    trained, metrics = read("train_model/model/training_summary.json"), read("evaluate_model/metrics.json")
    print("\n=== retrain_intent summary ===")
    print(f"run:              {run_id}  ({wall:.0f}s wall)")
    if raw:
        print(f"raw snapshot:     {len(raw['files'])} files, {raw['total_rows']} rows ({raw['interval_rows']} new in the interval)")
    if built:
        c = built["counts"]
        print(f"dataset version:  {built['dataset_version']}  train={c['train']} validation={c['validation']}  "
              f"dupes removed={c['raw_rows'] - c['after_normalized_dedupe']} golden overlap removed={c['contaminated_removed']}")
        print(f"drift:            score {built['drift']['score']:.3f} vs {built['previous_version'] or 'no previous version'}")
    if trained:
        print(f"training:         {trained['wall_seconds']:.0f}s, val macro F1 {trained['final'].get('val_macro_f1', float('nan')):.4f}, "
              f"weights {trained['weights_digest'][:16]}…")
    if metrics:
        ch = metrics["challenger"]
        print(f"golden {metrics['golden_version']}:        macro F1 {ch['macro_f1']:.4f}, accuracy {ch['accuracy']:.4f}, "
              f"latency p50 {ch['latency_ms']['p50']:.1f} ms / p99 {ch['latency_ms']['p99']:.1f} ms  (n={metrics['n_examples']})")
        print(f"report:           {run / 'evaluate_model' / 'report.html'}")
    print(f"mlflow:           {os.environ['MLFLOW_TRACKING_URI']}  (UI: make ui, then http://localhost:5000)")
    print("airflow UI:       http://localhost:8080  (make ui; user admin, password in .airflow/simple_auth_manager_passwords.json.generated)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="API server port (default 8080)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds to wait for the run (default 1200)")
    parser.add_argument("--keep-running", action="store_true", help="leave Airflow running afterwards for the UI")
    args = parser.parse_args()
    started = time.monotonic()
    config = load_model(MODEL)
    interval_start, interval_end = latest_complete_week(datetime.now(timezone.utc))
    first_week = (interval_start - timedelta(weeks=5)).date()
    seed_main([MODEL, "--weeks", "6", "--first-week", first_week.isoformat()])

    proc = start_airflow(args.port)
    try:
        client = AirflowClient(f"http://localhost:{args.port}", Path(os.environ["AIRFLOW_HOME"]))
        wait_until(client.healthy, 180, "the Airflow API server to answer")
        client.login("admin")
        wait_until(lambda: client.dag(config.dag_id) is not None, 180, f"{config.dag_id} to be parsed")
        print(f"{config.dag_id} parsed; data interval {interval_start:%Y-%m-%d} .. {interval_end:%Y-%m-%d}")
        existing = client.run_for_interval(config.dag_id, interval_start)
        client.set_paused(config.dag_id, False)
        if existing is None:
            print("unpaused: waiting for the scheduler to create the run of the latest complete week")
            wait_until(lambda: client.run_for_interval(config.dag_id, interval_start) is not None, 120, "the scheduled run")
            run_id = client.run_for_interval(config.dag_id, interval_start)["dag_run_id"]
        else:
            run_id = f"demo__{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
            print(f"that interval already ran ({existing['dag_run_id']}); triggering {run_id} with force=true")
            client.trigger(config.dag_id, run_id, interval_start, interval_end, {"force": True})
        state = follow_run(client, config.dag_id, run_id, started, args.timeout)
        summary(run_id, time.monotonic() - started)
        print(f"\nrun state: {state}")
        if args.keep_running:
            print("Airflow keeps running (Ctrl-C to stop).")
            proc.wait()
        return 0 if state == "success" else 1
    finally:
        if not args.keep_running or proc.poll() is None:
            stop_airflow(proc)


if __name__ == "__main__":
    sys.exit(main())
