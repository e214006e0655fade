"""Pipeline: time to model, orchestration overhead and time to roll back, under a real Airflow.

Measured: the README demo flow (scripts/demo.py's own pieces: seeding, `airflow standalone`
on a free port, run 1 for the previous week triggered over REST, run 2 created by the
scheduler, both approved over REST hitlDetails as alice once the request is parked, as the
demo does) in fresh RETRAIN_HOME, AIRFLOW_HOME and MLflow SQLite directories.
- Time to model: wall time from the start (seeding included) until run 2 is promoted, minus
  the approval waits (each approval request's created_at to responded_at, as Airflow
  recorded them: the time a person would take; here a scripted answer after a few seconds).
  Target: at most 10 minutes; golden macro F1 of each run's challenger at least 0.85.
- Overhead: for each run, wall time (DAG run start to end, minus its approval wait) split
  into job time (the seconds the runner logged as "<job> finished in X s" for validate_raw,
  build_dataset, train_model and evaluate_model: the work a Glue or SageMaker job would do)
  and everything else (scheduling, task start-up, snapshot, gate, the register and promote
  registry calls). Baseline: the job time of the same run. Target: overhead at most 15 %.
- Deployment: run 2 goes through the demo's deployment windows (``DEMO_DEPLOYMENT``: shadow, a 1-minute 20% canary)
  on the project's model server while traffic replays the raw partitions at the demo's rate; approval to 100% is
  reported, and the observation windows are left out of the overhead share like the approval wait.
- Rollback: with Airflow still up after the two promotions, rollback_intent (created
  unpaused) is triggered over REST as admin with an explicit target_version, alternating
  between the two champions; the time from the trigger call to the new 'rollback' entry in
  ledger/intent.jsonl (polled every 50 ms), median of repeats. The registry job's own
  seconds (from the task log) are reported beside it. Target: at most 15 s; ratio against
  the 8-minute mean time to rollback that the replaced production system reports (a reference, not measured here).
  With the traffic still running, the time until every answer carries the target version: the client's recovery.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from common import PROJECT_ROOT, log, median, row

TARGET_TIME_TO_MODEL_S = 600.0
TARGET_F1 = 0.85
TARGET_OVERHEAD = 0.15
TARGET_ROLLBACK_S = 15.0
PRODUCTION_MTTR_S = 8 * 60.0
WORK_JOBS = ("validate_raw", "build_dataset", "train_model", "evaluate_model")
REGISTRY_JOBS = ("register_model", "promote_model")
FINISHED = re.compile(r"^(\w+) finished in ([\d.]+)s$")


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def job_seconds(airflow_home: Path, dag_id: str, run_id: str) -> dict[str, float]:
    """'<job> finished in X s', as the runner logged it into each task's log (every attempt summed)."""
    found: dict[str, float] = {}
    for path in (airflow_home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}").glob("task_id=*/attempt=*.log"):
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line).get("event", "")
            except ValueError:
                event = line
            match = FINISHED.match(str(event).strip())
            if match:
                found[match.group(1)] = found.get(match.group(1), 0.0) + float(match.group(2))
    return found


def follow(client, approver, dag_id: str, run_id: str, started: float, timeout: float = 1800, on_approved=None) -> str:
    """Print task state changes, approve as the demo user (then call ``on_approved``), return the run's final
    state."""
    seen: dict[str, str] = {}
    answered = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ti in client.task_instances(dag_id, run_id):
            state = ti["state"] or "none"
            if seen.get(ti["task_id"]) != state and state != "none":
                seen[ti["task_id"]] = state
                log(f"[{time.monotonic() - started:6.1f}s] {ti['task_id']:<16} {state}")
            # like the demo: a scripted answer waits for the parking worker (Airflow 3.3.1 race)
            if (
                ti["task_id"] == "await_approval"
                and state == "awaiting_input"
                and not answered
                and client.wait_for_approval_request(dag_id, run_id)
            ):
                approver.respond(dag_id, run_id, "await_approval", "Approve", {"reason": "bench: gate passed"})
                answered = True
                if on_approved:
                    on_approved()
        state = client.dag_run(dag_id, run_id)["state"]
        if state in ("success", "failed"):
            return state
        time.sleep(1)
    raise TimeoutError(f"{dag_id} run {run_id} did not finish within {timeout:.0f}s")


def analyse_run(client, airflow_home: Path, store_root: Path, dag_id: str, run_id: str) -> dict:
    """One run's wall time, approval wait, job and overhead seconds, and golden macro F1."""
    from retrain.jobs import latest_try, run_key

    run = client.dag_run(dag_id, run_id)
    wall = (when(run["end_date"]) - when(run["start_date"])).total_seconds()
    hitl = client.hitl_detail(dag_id, run_id, "await_approval") or {}
    wait = (when(hitl["responded_at"]) - when(hitl["created_at"])).total_seconds() if hitl.get("responded_at") else 0.0
    tasks = {ti["task_id"]: ti for ti in client.task_instances(dag_id, run_id)}
    durations = {
        t: (when(ti["end_date"]) - when(ti["start_date"])).total_seconds()
        for t, ti in tasks.items()
        if ti.get("start_date") and ti.get("end_date")
    }
    jobs = job_seconds(airflow_home, dag_id, run_id)
    missing = [j for j in WORK_JOBS if j not in jobs]
    if missing:
        raise RuntimeError(f"run {run_id}: no 'finished in' log line for {missing}")
    work, registry = sum(jobs[j] for j in WORK_JOBS), sum(jobs.get(j, 0.0) for j in REGISTRY_JOBS)
    # The deployment stage's windows wait for live traffic, as the approval waits for a person: both are left out.
    observed = sum(durations.get(t, 0.0) for t in ("observe_shadow", "observe_canary"))
    full = (
        (when(tasks["promote_model"]["end_date"]) - when(hitl["responded_at"])).total_seconds()
        if hitl.get("responded_at") and tasks.get("promote_model", {}).get("end_date")
        else None
    )
    wall_excl = wall - wait - observed
    metrics = json.loads(
        (latest_try(store_root / "runs" / "intent" / run_key(run_id) / "evaluate_model") / "metrics.json").read_text()
    )
    return {
        "run_id": run_id,
        "state": run["state"],
        "wall_s": wall,
        "approval_wait_s": wait,
        "observation_s": observed,
        "approval_to_full_traffic_s": full,
        "wall_excl_approval_s": wall_excl,
        "job_s": work,
        "jobs": jobs,
        "overhead_s": wall_excl - work,
        "overhead_share": (wall_excl - work) / wall_excl,
        "registry_s": registry,
        "task_durations_s": durations,
        "scheduling_gaps_s": wall - sum(durations.values()),
        "task_startup_s": sum(
            durations[j] - jobs[j] for j in (*WORK_JOBS, *REGISTRY_JOBS) if j in durations and j in jobs
        ),
        "in_process_s": sum(
            durations.get(t, 0.0) for t in ("snapshot_raw", "check_drift", "gate_on_metrics", "await_approval")
        )
        - wait,
        "macro_f1": metrics["challenger"]["macro_f1"],
        "champion_macro_f1": (metrics.get("champion") or {}).get("macro_f1"),
    }


def measure_rollbacks(client, airflow_home: Path, store, repeats: int, answers: list) -> list[dict]:
    """Trigger rollback_intent to the other champion; seconds until the ledger shows it, and until every answer the
    traffic (``answers``: (time, version) pairs, appended as they come) gets carries the target version."""
    from retrain import ledger

    out = []
    for i in range(repeats):
        entries = ledger.read_entries(store, "intent")
        target = ledger.previous_champion(entries)  # the champion before the current one
        started = time.perf_counter()
        run = client.trigger_manual("rollback_intent", {"reason": f"bench rollback {i + 1}", "target_version": target})
        deadline = started + 180
        while time.perf_counter() < deadline:
            try:
                latest = ledger.read_entries(store, "intent")
            except ValueError:  # a line caught mid-append
                latest = entries
            if len(latest) > len(entries) and latest[-1]["action"] == "rollback" and latest[-1]["to_version"] == target:
                break
            time.sleep(0.05)
        else:
            raise TimeoutError(f"rollback {i + 1} to v{target}: no ledger entry after 180 s")
        to_ledger = time.perf_counter() - started
        while (state := client.dag_run("rollback_intent", run["dag_run_id"])["state"]) not in ("success", "failed"):
            time.sleep(0.2)
        to_success = time.perf_counter() - started
        time.sleep(2)  # answers keep coming: the last one from another version marks the recovery
        other = [at for at, version in list(answers) if at >= started and version != str(target)]
        to_clients = (max(other) - started) if other else 0.0
        job = job_seconds(airflow_home, "rollback_intent", run["dag_run_id"]).get("rollback_model")
        out.append(
            {
                "run_id": run["dag_run_id"],
                "target_version": target,
                "to_ledger_s": to_ledger,
                "to_run_success_s": to_success,
                "to_every_client_s": to_clients,
                "state": state,
                "job_s": job,
            }
        )
        log(
            f"rollback {i + 1}/{repeats} to v{target}: ledger after {to_ledger:.1f}s, run {state} after "
            f"{to_success:.1f}s, every answer from v{target} after {to_clients:.1f}s"
            + (f", registry job {job:.1f}s" if job else "")
        )
    return out


def run(quick: bool, work: Path) -> dict:
    sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
    import demo
    from retrain.config import load_model
    from retrain.runner import free_port, stop_process_group
    from retrain.serving import ServingError
    from retrain.store import LocalStore
    from retrain_tools import serving as serving_tools
    from retrain_tools.airflow_api import AirflowClient, wait_until
    from retrain_tools.seed import seed

    store_root, airflow_home = work / "home", work / "airflow"
    os.environ.update(
        {
            "RETRAIN_HOME": str(store_root),
            "AIRFLOW_HOME": str(airflow_home),
            "MLFLOW_TRACKING_URI": f"sqlite:///{store_root / 'mlflow.db'}",
            # a second Airflow on this machine must not collide on the log-server ports either
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        }
    )
    port, repeats = free_port(), 3 if quick else 5
    dag_id = "retrain_intent"
    started = time.monotonic()
    os.environ["RETRAIN_CONFIG_DIR"] = str(demo.demo_config_dir(store_root))  # the demo's deployment windows
    config = load_model("intent")
    week1, week2 = seed(LocalStore(store_root), config)["intervals"][-2:]  # the demo's placement rule
    seeded = time.monotonic()
    server = serving_tools.start(port=free_port(), root=store_root)
    answers: list[tuple[float, str]] = []
    stop_traffic = threading.Event()

    def traffic() -> None:  # the demo's rate, single requests; each answer's time and version
        i = 0
        instances = serving_tools.requests_for("intent", store_root)
        while not stop_traffic.is_set():
            try:
                _, headers, _ = server.invoke("intent", [instances[i % len(instances)]])
            except ServingError:  # the server stopped answering: the gap shows in the recovery figure
                headers = {}
            answers.append((time.perf_counter(), headers.get("x-retrain-version")))
            i += 1
            stop_traffic.wait(1 / demo.TRAFFIC_RPS)

    sender = threading.Thread(target=traffic, daemon=True)
    proc = demo.start_airflow(port, config.approval.assigned_users[0])
    try:
        client = AirflowClient(f"http://localhost:{port}", airflow_home)
        wait_until(client.healthy, 240, "the Airflow API server and scheduler")
        wait_until(
            lambda: (airflow_home / "simple_auth_manager_passwords.json.generated").exists(), 60, "generated passwords"
        )
        client.login("admin")
        wait_until(lambda: client.dag(dag_id) is not None, 240, f"{dag_id} to be parsed")
        ready = time.monotonic()
        approver = AirflowClient(client.base_url, airflow_home).login(config.approval.assigned_users[0])
        first_id = f"week_{week1[0]:%Y-%m-%d}"
        client.trigger(dag_id, first_id, week1[0], week1[1], {}, logical_date=week1[0], run_after=week1[1])
        client.set_paused(dag_id, False)
        states = [follow(client, approver, dag_id, first_id, started)]
        second_id = wait_until(lambda: client.run_for_interval(dag_id, week2[0]), 120, "the scheduled run")[
            "dag_run_id"
        ]
        states.append(follow(client, approver, dag_id, second_id, started, on_approved=sender.start))
        finished = time.monotonic()
        if states != ["success", "success"]:
            raise RuntimeError(f"demo runs ended {states}; see {airflow_home / 'standalone.log'}")
        runs = [analyse_run(client, airflow_home, store_root, dag_id, rid) for rid in (first_id, second_id)]
        rollbacks = measure_rollbacks(client, airflow_home, LocalStore(store_root), repeats, answers)
    finally:
        stop_traffic.set()
        stop_process_group(proc)
        serving_tools.stop(store_root)

    waits = sum(r["approval_wait_s"] for r in runs)
    time_to_model = finished - started - waits
    share = median([r["overhead_share"] for r in runs])
    rollback_s = median([r["to_ledger_s"] for r in rollbacks])
    recovered_s = median([r["to_every_client_s"] for r in rollbacks])
    full = runs[1]["approval_to_full_traffic_s"]
    job_rollback = [r["job_s"] for r in rollbacks if r["job_s"]]
    rows = [
        row(
            "Pipeline",
            f"time to model: demo flow, 2 weekly runs to the second promotion (seeding {seeded - started:.1f} s, "
            "Airflow "
            f"up in {ready - seeded:.1f} s; approval waits of {waits:.1f} s excluded)",
            round(time_to_model, 1),
            "s",
            1,
            target=f"≤ {TARGET_TIME_TO_MODEL_S / 60:g} min",
            met=time_to_model <= TARGET_TIME_TO_MODEL_S,
        ),
        *(
            row(
                "Pipeline",
                f"golden macro F1, run {i} ({'no champion' if r['champion_macro_f1'] is None else 'vs champion'})",
                round(r["macro_f1"], 4),
                "",
                1,
                target=f"≥ {TARGET_F1}",
                met=r["macro_f1"] >= TARGET_F1,
            )
            for i, r in enumerate(runs, 1)
        ),
        row(
            "Pipeline",
            "overhead share of run wall time (approval wait excluded), median of the 2 runs; run walls "
            + ", ".join(f"{r['wall_excl_approval_s']:.0f} s" for r in runs),
            f"{share:.1%}",
            "",
            len(runs),
            baseline="job time: " + ", ".join(f"{r['job_s']:.0f} s" for r in runs),
            ratio="overhead " + ", ".join(f"{r['overhead_s']:.0f} s" for r in runs),
            target=f"≤ {TARGET_OVERHEAD:.0%}",
            met=share <= TARGET_OVERHEAD,
        ),
        row(
            "Rollback",
            "trigger (REST) to new champion in the ledger, alternating targets",
            round(rollback_s, 1),
            "s",
            len(rollbacks),
            baseline=f"production MTTR {PRODUCTION_MTTR_S / 60:g} min",
            ratio=f"{PRODUCTION_MTTR_S / rollback_s:.0f}x faster",
            target=f"≤ {TARGET_ROLLBACK_S:g} s",
            met=rollback_s <= TARGET_ROLLBACK_S,
            note=f"registry job itself {median(job_rollback):.1f} s" if job_rollback else "",
        ),
    ]
    rows += [
        row(
            "Rollback",
            "trigger (REST) until every answer of the endpoint comes from the target, client side, traffic at "
            f"{demo.TRAFFIC_RPS} requests/s",
            round(recovered_s, 1),
            "s",
            len(rollbacks),
            target="≤ 5 s",
            met=recovered_s <= 5,
        ),
        row(
            "Deployment",
            "run 2: approval to 100% of the traffic (shadow, then a 1-minute 20% canary: the demo's windows)",
            None if full is None else round(full, 1),
            "s",
            1,
            note=f"observation windows {runs[1]['observation_s']:.0f} s, left out of the overhead share",
        ),
    ]
    notes = [
        f"Pipeline run {i} ({r['run_id']}): wall {r['wall_s']:.0f} s, approval wait {r['approval_wait_s']:.1f} s, jobs "
        + ", ".join(f"{j} {r['jobs'][j]:.1f} s" for j in WORK_JOBS)
        + f"; overhead {r['overhead_s']:.1f} s = registry jobs (register, promote) {r['registry_s']:.1f} s "
        f"+ task start-up around jobs {r['task_startup_s']:.1f} s + in-process tasks (snapshot, drift check, gate, "
        f"approval request and resume) {r['in_process_s']:.1f} s + scheduling gaps between tasks "
        f"{r['scheduling_gaps_s']:.1f} s."
        for i, r in enumerate(runs, 1)
    ]
    return {
        "rows": rows,
        "notes": notes,
        "details": {
            "seed_s": seeded - started,
            "airflow_ready_s": ready - seeded,
            "flow_wall_s": finished - started,
            "approval_waits_s": waits,
            "time_to_model_s": time_to_model,
            "runs": runs,
            "rollbacks": rollbacks,
            "port": port,
        },
    }
