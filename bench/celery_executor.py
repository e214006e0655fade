"""Celery: orchestration overhead under CeleryExecutor beside LocalExecutor's, and the throughput of concurrent model
runs on two workers against one.

Measured on the test tiers' tiny project (tests/airflowstack.py: 5 intents, about 200 raw rows over two
weekly partitions, the tiny intent config with its latency ceilings lifted, since several evaluations at
once on shared cores miss them), in fresh directories, every Airflow on free ports; each run
is the one the scheduler creates for the latest complete week when its DAG is unpaused, and each approval
is answered over REST hitlDetails as alice once the request is parked (as the demo does).
- Overhead: one run of retrain_intent under `airflow standalone` (LocalExecutor, SQLite) and one under
  scripts/celery_stack.py (CeleryExecutor, Postgres, Redis, two workers): run wall time minus its approval
  wait, minus the job time the runner logged ('<job> finished in X s' for validate_raw, build_dataset,
  train_model and evaluate_model), as bench/pipeline.py splits it. Baseline: LocalExecutor's overhead in
  the same bench run.
- Throughput: N copies of the tiny intent model (intent_t1..), all unpaused at once, each running its one
  run to promotion; makespan from the unpause calls to the end of the last run, and runs per hour, under
  Celery with two workers and with one worker (5 task slots each, MWAA mw1.small's). Baseline: one worker.
  Both share the same 2 CPU cores, so this measures what a second worker process adds on one machine,
  not what a second MWAA worker machine adds.
No targets: figures only. Run on its own (`python bench/celery_executor.py [--quick]`) it rewrites only its
section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from common import PROJECT_ROOT, log, row, write_section

sys.path[:0] = [str(PROJECT_ROOT / "tests"), str(PROJECT_ROOT / "scripts")]

DAG = "retrain_intent"


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def tiny_project(root: Path, models: tuple[str, ...]):
    from airflowstack import TinyProject

    project = TinyProject(root)
    for model in models:
        project.add_model(model)
        project.land_two_weeks(model)
        # Latency ceilings out of reach: several evaluations at once on 2 shared cores measure p50s of
        # 90-155 ms, and a gate rejection would end a run early; this measures orchestration, not the gate.
        config = project.config_dir / f"{model}.yaml"
        config.write_text(
            config.read_text()
            .replace("latency_p50_ms_max: 50", "latency_p50_ms_max: 100000")
            .replace("latency_p99_ms_max: 200", "latency_p99_ms_max: 100000")
        )
    project.sync_dags()
    return project


def start_standalone(project, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """``airflow standalone`` (LocalExecutor on SQLite) over the tiny project, on free ports."""
    from retrain.runner import free_port

    port = free_port()
    env.update(
        {
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        }
    )
    from retrain_tools.standalone import start_standalone as start  # as the demo starts it: local, owner-only

    return start(env, project.root / "standalone.log", truncate=True), f"http://localhost:{port}"


def drive(client, approver, dag_ids: list[str], alive, timeout: float = 1800) -> dict:
    """Unpause every DAG at once, answer each approval as it parks, wait for every run; timings per run.
    ``alive()`` raises when an Airflow process has died (else every poll would just fail until the timeout)."""
    from retrain_tools.airflow_api import wait_until

    unpaused = datetime.now(UTC)
    for dag_id in dag_ids:
        client.set_paused(dag_id, False)
    runs = {
        dag_id: wait_until(
            lambda dag_id=dag_id: (client.dag_runs(dag_id) or [None])[0], 120, f"{dag_id}'s scheduled run"
        )["dag_run_id"]
        for dag_id in dag_ids
    }
    answered: set[str] = set()
    deadline = time.monotonic() + timeout
    pending = set(dag_ids)
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"runs of {sorted(pending)} did not finish within {timeout:.0f} s")
        alive()
        for dag_id in sorted(pending):
            states = {ti["task_id"]: ti["state"] for ti in client.task_instances(dag_id, runs[dag_id])}
            if (
                states.get("await_approval") == "awaiting_input"
                and dag_id not in answered
                and client.wait_for_approval_request(dag_id, runs[dag_id], settle=1.0)
            ):
                approver.respond(dag_id, runs[dag_id], "await_approval", "Approve", {"reason": "bench: gate passed"})
                answered.add(dag_id)
            if client.dag_run(dag_id, runs[dag_id])["state"] in ("success", "failed"):
                pending.discard(dag_id)
        time.sleep(1)
    out = {}
    for dag_id, run_id in runs.items():
        run = client.dag_run(dag_id, run_id)
        hitl = client.hitl_detail(dag_id, run_id, "await_approval") or {}
        wait = (
            (when(hitl["responded_at"]) - when(hitl["created_at"])).total_seconds() if hitl.get("responded_at") else 0.0
        )
        out[dag_id] = {
            "run_id": run_id,
            "state": run["state"],
            "start": run["start_date"],
            "end": run["end_date"],
            "wall_s": (when(run["end_date"]) - when(run["start_date"])).total_seconds(),
            "approval_wait_s": wait,
        }
    failed = [d for d, r in out.items() if r["state"] != "success"]
    if failed:
        raise RuntimeError(f"runs ended failed: {failed}")
    makespan = (max(when(r["end"]) for r in out.values()) - unpaused).total_seconds()
    return {"runs": out, "makespan_s": makespan}


def overhead_run(client, approver, airflow_home: Path, store_root: Path, alive) -> dict:
    """One scheduled run of retrain_intent, split into job time and overhead (bench/pipeline.py's analysis)."""
    from pipeline import analyse_run

    driven = drive(client, approver, [DAG], alive)
    return analyse_run(client, airflow_home, store_root, DAG, driven["runs"][DAG]["run_id"])


def local_overhead(work: Path) -> dict:
    from airflowstack import logged_in, user_factory
    from retrain.runner import stop_process_group

    project = tiny_project(work / "local", ("intent",))
    env = project.env(dict(os.environ))
    project.publish_golden(env, ("intent",))
    started = time.monotonic()
    proc, url = start_standalone(project, env)
    try:
        client = logged_in(url, project.airflow_home, (DAG,))
        ready = time.monotonic() - started

        def alive() -> None:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"airflow standalone exited with {proc.returncode}; see {project.root / 'standalone.log'}"
                )

        result = overhead_run(client, user_factory(client)("alice"), project.airflow_home, project.store_root, alive)
    finally:
        stop_process_group(proc)
    return {**result, "airflow_ready_s": ready}


def celery_measures(work: Path, workers: tuple[str, ...], models: tuple[str, ...], with_overhead: bool) -> dict:
    """One Celery deployment: the overhead run of retrain_intent (if asked), then the N concurrent runs."""
    from airflowstack import logged_in, user_factory
    from celery_stack import CeleryStack

    project = tiny_project(work / f"celery-{len(workers)}", (("intent",) if with_overhead else ()) + models)
    base = project.env(dict(os.environ))
    project.publish_golden(base, (("intent",) if with_overhead else ()) + models)
    dag_ids = [f"retrain_{m}" for m in models]
    with CeleryStack(project.root / "deployment", base, workers=workers).start() as stack:
        client = logged_in(stack.api_url, project.airflow_home, tuple(dag_ids) + ((DAG,) if with_overhead else ()))
        alice = user_factory(client)("alice")

        def alive() -> None:
            dead = {name: proc.returncode for name, proc in stack.procs.items() if proc.poll() is not None}
            if dead:
                raise RuntimeError(f"Airflow processes exited: {dead}; logs in {stack.logs}")

        out: dict = {"stack_timings": dict(stack.timings)}
        if with_overhead:
            out["overhead"] = overhead_run(client, alice, project.airflow_home, project.store_root, alive)
        load_before = os.getloadavg()[0]
        out["throughput"] = drive(client, alice, dag_ids, alive)
        out["throughput"]["load_average"] = {"start": load_before, "end": os.getloadavg()[0]}
        out["tasks_per_worker"] = {w: len(stack.tasks_received(w)) for w in workers}
    return out


def run(quick: bool, work: Path) -> dict:
    n = 2 if quick else 3
    models = tuple(f"intent_t{i}" for i in range(1, n + 1))
    log("LocalExecutor (airflow standalone): one run of retrain_intent")
    local = local_overhead(work)
    log(f"  overhead {local['overhead_s']:.1f} s of {local['wall_excl_approval_s']:.1f} s")
    log(f"CeleryExecutor, two workers: one run of retrain_intent, then {n} models at once")
    two = celery_measures(work, ("worker1", "worker2"), models, with_overhead=True)
    log(f"  overhead {two['overhead']['overhead_s']:.1f} s; {n} runs in {two['throughput']['makespan_s']:.1f} s")
    log(f"CeleryExecutor, one worker: {n} models at once")
    one = celery_measures(work, ("worker1",), models, with_overhead=False)
    log(f"  {n} runs in {one['throughput']['makespan_s']:.1f} s")

    celery = two["overhead"]
    makespan_two, makespan_one = two["throughput"]["makespan_s"], one["throughput"]["makespan_s"]

    def split(r: dict) -> str:
        return (
            f"wall {r['wall_excl_approval_s']:.0f} s = jobs {r['job_s']:.0f} s + overhead {r['overhead_s']:.0f} s "
            "(registry jobs "
            f"{r['registry_s']:.0f} s, task start-up {r['task_startup_s']:.0f} s, in-process tasks "
            f"{r['in_process_s']:.0f} s, "
            f"scheduling gaps {r['scheduling_gaps_s']:.0f} s)"
        )

    rows = [
        row(
            "Celery",
            "orchestration overhead of one tiny retrain_intent run (wall minus approval wait minus job time), "
            "CeleryExecutor, "
            "2 workers, Postgres, Redis",
            round(celery["overhead_s"], 1),
            "s",
            1,
            baseline=f"LocalExecutor (standalone, SQLite): {local['overhead_s']:.1f} s",
            ratio=f"{celery['overhead_s'] - local['overhead_s']:+.1f} s "
            f"({celery['overhead_s'] / local['overhead_s']:.2f}x)",
        ),
        row(
            "Celery",
            "overhead share of that run's wall time (approval wait excluded)",
            f"{celery['overhead_share']:.1%}",
            "",
            1,
            baseline=f"LocalExecutor: {local['overhead_share']:.1%}",
        ),
        row(
            "Celery",
            f"throughput: {n} tiny model runs at once, unpause to the last run's end, 2 workers",
            round(makespan_two, 1),
            "s",
            1,
            baseline=f"1 worker: {makespan_one:.1f} s",
            ratio=f"{makespan_one / makespan_two:.2f}x the runs per hour",
            note=f"{n * 3600 / makespan_two:.0f} vs {n * 3600 / makespan_one:.0f} runs/h",
        ),
    ]
    notes = [
        f"Celery overhead run: {split(celery)}.",
        f"LocalExecutor overhead run: {split(local)}.",
        "Celery deployment up (Postgres, Redis, db migrate with MLflow's schema, six Airflow processes healthy) in "
        f"{two['stack_timings']['ready_s']:.0f} s; airflow standalone in {local['airflow_ready_s']:.0f} s.",
        "Throughput runs' walls, 2 workers: "
        + ", ".join(f"{r['wall_s']:.0f} s" for r in two["throughput"]["runs"].values())
        + "; 1 worker: "
        + ", ".join(f"{r['wall_s']:.0f} s" for r in one["throughput"]["runs"].values())
        + f". Tasks received per worker (2-worker deployment, overhead run included): {two['tasks_per_worker']}. "
        f"Load average (1 min) during them: {two['throughput']['load_average']} and "
        f"{one['throughput']['load_average']}: "
        "the 2 cores are shared with everything else on the machine.",
    ]
    return {
        "rows": rows,
        "notes": notes,
        "details": {"local": local, "celery_two_workers": two, "celery_one_worker": one, "n": n},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 concurrent models instead of 3")
    parser.add_argument("--keep-work", action="store_true", help="keep the temp directory (logs, stores) afterwards")
    args = parser.parse_args()
    import shutil
    import tempfile

    from run import isolate, table

    work = Path(tempfile.mkdtemp(prefix="retrain-bench-celery-"))
    isolate(work)
    try:
        outcome = run(args.quick, work)
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    out = PROJECT_ROOT / "bench" / "results" / "celery_executor.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(outcome, indent=2, default=str) + "\n")
    section = (
        table({"order": ["celery_executor"], "benchmarks": {"celery_executor": outcome}})
        + ["", "Notes:", ""]
        + [f"- {n}" for n in outcome["notes"]]
    )
    write_section(
        "celery_executor", "Celery executor", section, "python bench/celery_executor.py " + " ".join(sys.argv[1:])
    )
    print("\n".join(section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
