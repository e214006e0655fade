"""The aws backend's orchestration overhead, on moto (an AWS simulator), beside the local backend's.

Measured: ``tests/aws/test_pipeline_simulated.py`` (the whole ``retrain_intent`` run with
``RETRAIN_BACKEND=aws`` under ``airflow standalone``, provider operators deferred to the
triggerer, polling every 2 s, jobs run by ``tests/moto_job_bridge.py`` on tiny data) from
unpausing the DAG to the run's success. Job time is what the bridge spent in the job scripts;
orchestration overhead is everything else: scheduling, task start-up, request building and
validation, S3 and registry calls, deferral and polling, and answering the approval (done as soon
as it is asked). moto answers in milliseconds where AWS takes seconds to minutes to start a job,
so this is the overhead of the project and Airflow, not of AWS.
Baseline: the local backend's overhead share from the pipeline benchmark (same bench run when it
ran, else the last recorded one in bench/results/latest.json). No target in the issue; reported only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from common import PROJECT_ROOT, log, row

LATEST = PROJECT_ROOT / "bench" / "results" / "latest.json"


def local_overhead_share() -> str:
    """The pipeline benchmark's overhead share, with where it comes from."""
    try:
        latest = json.loads(LATEST.read_text())
        details = latest["benchmarks"]["pipeline"]["details"]
        shares = [r["overhead_share"] for r in details["runs"]]
        return (
            f"local backend: {sum(shares) / len(shares):.0%} of run wall (bench/results/latest.json, {latest['date']})"
        )
    except (OSError, KeyError, ValueError, ZeroDivisionError, TypeError):
        return "local backend: run the pipeline benchmark for its overhead share"


def run(quick: bool, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    figures = work / "aws_e2e.json"
    env = {**os.environ, "RETRAIN_BENCH_FIGURES": str(figures)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/aws/test_pipeline_simulated.py",
        "--basetemp",
        str(work / "pytest"),
    ]
    log("running the aws DAG end to end on moto (about 4-6 minutes)")
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not figures.exists():
        raise RuntimeError(f"the simulated aws run failed (exit {done.returncode}): {done.stdout[-3000:]}")
    data = json.loads(figures.read_text())
    job_s = sum(j["seconds"] for j in data["jobs"])
    overhead = data["wall_s"] - job_s
    rows = [
        row(
            "AWS pipeline (moto)",
            "unpause to run success, RETRAIN_BACKEND=aws, tiny data, jobs by the bridge",
            round(data["wall_s"], 1),
            "s",
            1,
        ),
        row(
            "AWS pipeline (moto)",
            "time in job scripts: " + ", ".join(f"{j['kind']} {j['seconds']:.0f} s" for j in data["jobs"]),
            round(job_s, 1),
            "s",
            1,
        ),
        row(
            "AWS pipeline (moto)",
            "orchestration overhead (everything but job scripts)",
            round(overhead, 1),
            "s",
            1,
            baseline=local_overhead_share(),
            ratio=f"{overhead / data['wall_s']:.0%} of run wall",
        ),
    ]
    return {"rows": rows, "details": data}
