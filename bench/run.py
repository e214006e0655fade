"""retrain benchmarks: figures and ratios against baselines measured in the same run, never assertions.

    make bench                                  # full mode
    make bench BENCH_ARGS=--quick               # a few minutes
    source scripts/env.sh && python bench/run.py --quick --only parse,gate_scale

Writes bench/results/latest.json (every repetition, the machine, the mode) and
docs/performance.md (the table: medians over n repetitions, each beside its baseline and
its target, met or not met). Every benchmark runs in fresh temp directories (RETRAIN_HOME,
AIRFLOW_HOME, MLflow) and starts Airflow, when it does, on a free port; the project's
.retrain/ and .airflow/ are never touched.

Modes:
  full (default)  parse 7 reps; gate 10k/100k/1M, 5 reps; training 2048 examples x 2 epochs,
                  3 reps; ETL 10k/100k/1M rows, 3/3/2 reps; pipeline (the README demo under
                  airflow standalone) once, with 5 rollbacks; gate operating characteristics
                  300 A/A and 100 power draws per cell, rho 0.9/0.8/0.5 (10-15 min on one core);
                  celery_executor: tiny runs under LocalExecutor and CeleryExecutor, 3 models
                  at once on two workers and on one (10-15 min).
  aws_pipeline    (full mode) the aws DAG end to end on moto, an AWS simulator: orchestration overhead.
  model_demos     (full mode) `make demo MODEL=<name>` of each further model (sentiment): wall time and golden quality.
  --quick         parse 3 reps; gate 10k/100k, 3 reps; training 512 examples x 2 epochs,
                  3 reps; ETL 10k/100k rows, 2 reps; gate operating characteristics 100 A/A
                  and 50 power draws per cell, rho 0.9 only; no pipeline (it needs 6-8 minutes on
                  its own; add it with --with-pipeline or --only pipeline), no celery_executor (likewise).
  bench/gate_oc.py on its own rewrites only its section of docs/performance.md.
Exit status: 0 when every benchmark ran (whether or not targets were met), 1 when one failed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

import psutil

from common import PROJECT_ROOT, job_python

BENCHMARKS = (
    "parse",
    "deploy",
    "gate_scale",
    "gate_oc",
    "training",
    "etl_scale",
    "pipeline",
    "celery_executor",
    "aws_pipeline",
    "model_demos",
)
RESULTS = PROJECT_ROOT / "bench" / "results" / "latest.json"
REPORT = PROJECT_ROOT / "docs" / "performance.md"


def isolate(root: Path) -> None:
    """Point every state location at ``root`` before any benchmark starts (env.sh defaults to the project's)."""
    os.environ["RETRAIN_HOME"] = str(root / "home")
    os.environ["AIRFLOW_HOME"] = str(root / "airflow")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'home' / 'mlflow.db'}"
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    for name in ("RETRAIN_HOME", "AIRFLOW_HOME"):
        Path(os.environ[name]).mkdir(parents=True, exist_ok=True)


def job_versions() -> dict[str, str]:
    code = (
        "import json, platform, torch, pyspark; print(json.dumps({'python': platform.python_version(), "
        "'torch': torch.__version__, 'pyspark': pyspark.__version__}))"
    )
    try:
        out = subprocess.run([job_python(), "-c", code], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.CalledProcessError, ValueError) as exc:
        return {"error": str(exc)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    from importlib.metadata import version

    sha = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], cwd=PROJECT_ROOT, capture_output=True, text=True
    ).stdout.strip()
    jobs = job_versions()
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python_airflow_env": platform.python_version(),
        "airflow": version("apache-airflow"),
        "python_job_env": jobs.get("python", "?"),
        "torch": jobs.get("torch", "?"),
        "pyspark": jobs.get("pyspark", "?"),
        "git": f"{sha}{' (working tree has local changes)' if dirty else ''}",
    }


def table(results: dict) -> list[str]:
    lines = [
        "| benchmark | measure | median | n | baseline (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in results["order"]:
        outcome = results["benchmarks"][name]
        if "error" in outcome:
            lines.append(f"| {name} | FAILED: {outcome['error'].splitlines()[-1][:200]} | | | | | | |")
            continue
        for r in outcome["rows"]:
            value = r["value"] if isinstance(r["value"], str) else f"{r['value']:,}"
            value = f"{value} {r['unit']}".strip()
            met = "—" if r["met"] is None else "met" if r["met"] else "**not met**"
            measure = r["measure"] + (f"; {r['note']}" if r["note"] else "")
            lines.append(
                f"| {r['benchmark']} | {measure} | {value} | {r['n'] or '—'} | {r['baseline'] or '—'} | "
                f"{r['ratio'] or '—'} | {r['target'] or '—'} | {met} |"
            )
    return lines


def report(results: dict) -> str:
    m = results["machine"]
    load = results["load_average"]
    out = [
        "# Performance",
        "",
        f"Measured {results['date']} in **{results['mode']}** mode, {results['elapsed_s'] / 60:.1f} min in all, by "
        f"`{results['command']}`. Regenerate with `make bench` (full) or `make bench BENCH_ARGS=--quick`; every "
        "repetition is in `bench/results/latest.json` (not committed).",
        "",
        "These are measurements, not assertions: each figure is a median over n repetitions, shown beside a baseline "
        "measured in the same run (so the ratio holds on a noisy machine) and beside its target, met or not met.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m['cpu_model']}, {m['logical_cores']} logical cores ({m['physical_cores']} physical) |",
        f"| RAM | {m['ram_gib']} GiB |",
        "| GPU | none |" if not results.get("gpu") else f"| GPU | {results['gpu']} |",
        f"| OS | {m['os']} |",
        f"| Airflow env | Python {m['python_airflow_env']}, Airflow {m['airflow']} |",
        f"| job env | Python {m['python_job_env']}, torch {m['torch']}, pyspark {m['pyspark']} |",
        f"| code | {m['git']} |",
        f"| load average (1 min) | {load['start']:.2f} at start, {load['end']:.2f} at end (other work on the machine "
        "shows here) |",
        "",
        "## Results",
        "",
        *table(results),
        "",
    ]
    notes = [n for name in results["order"] for n in results["benchmarks"][name].get("notes", [])]
    skipped = results.get("skipped", [])
    if notes or skipped:
        out += ["Notes:", ""] + [f"- {n}" for n in notes] + [f"- not run in this mode: {s}" for s in skipped] + [""]
    for name in results["order"]:  # a benchmark with tables of its own (gate_oc) brings a section
        section = results["benchmarks"][name].get("section")
        if section:
            from common import section_markers

            SECTION_START, SECTION_END = section_markers(name)
            title = (importlib.import_module(name).__doc__ or name).strip().splitlines()[0].split(":")[0]
            out += [SECTION_START, f"## {title} (`bench/{name}.py`)", "", *section, SECTION_END, ""]
    out += ["## What each benchmark measures", ""]
    for name in BENCHMARKS:
        doc = (importlib.import_module(name).__doc__ or "").strip()
        title, _, body = doc.partition("\n")
        out += [f"### {title.rstrip('.')} (`bench/{name}.py`)", "", " ".join(body.split()), ""]
    out += ["## Modes", "", "```", __doc__.split("Modes:\n", 1)[1].split("Exit status")[0].rstrip(), "```", ""]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions, smaller sizes, no pipeline (a few minutes)"
    )
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--with-pipeline", action="store_true", help="run the pipeline benchmark in --quick mode too")
    parser.add_argument("--keep-work", action="store_true", help="keep the temp directory (logs, stores) afterwards")
    args = parser.parse_args()
    if "RETRAIN_PROJECT_ROOT" not in os.environ:
        parser.error("run through `make bench`, or `source scripts/env.sh` first")
    chosen = [b for b in args.only.split(",") if b] or list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    skipped = []
    if args.quick and not args.only and not args.with_pipeline:
        chosen.remove("pipeline")
        skipped.append(
            "pipeline (time to model, pipeline overhead, rollback): full mode, --with-pipeline or --only pipeline"
        )
        chosen.remove("aws_pipeline")
        skipped.append("aws_pipeline (the aws DAG on moto): full mode, --with-pipeline or --only aws_pipeline")
        chosen.remove("celery_executor")
        skipped.append(
            "celery_executor (Celery overhead and throughput, 10-15 min): full mode, --with-pipeline or --only "
            "celery_executor"
        )
        chosen.remove("model_demos")
        skipped.append(
            "model_demos (each further model's demo, 4 min each): full mode, --with-pipeline or --only model_demos"
        )
    order = [b for b in BENCHMARKS if b in chosen]

    work = Path(tempfile.mkdtemp(prefix="retrain-bench-"))
    isolate(work)
    started = time.monotonic()
    results = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick" if args.quick else "full",
        "command": "python bench/run.py " + " ".join(sys.argv[1:]),
        "work_dir": str(work),
        "order": order,
        "skipped": skipped,
        "load_average": {"start": os.getloadavg()[0]},
        "benchmarks": {},
    }
    print(f"retrain benchmarks, {results['mode']} mode: {', '.join(order)} (work dir {work})", flush=True)
    results["machine"] = machine()
    failed = False
    try:
        for name in order:
            print(f"\n== {name}", flush=True)
            bench_started = time.monotonic()
            (work / name).mkdir()
            try:
                outcome = importlib.import_module(name).run(args.quick, work / name)
            except Exception as exc:  # one failing benchmark must not hide the others' figures
                traceback.print_exc()
                outcome, failed = (
                    {"error": f"{type(exc).__name__}: {exc}\n{getattr(exc, 'output', '') or ''}".strip()},
                    True,
                )
            outcome["seconds"] = round(time.monotonic() - bench_started, 1)
            results["benchmarks"][name] = outcome
            print(f"  ({outcome['seconds']:.0f}s)", flush=True)
    finally:
        results["elapsed_s"] = round(time.monotonic() - started, 1)
        results["load_average"]["end"] = os.getloadavg()[0]
        results["gpu"] = (
            results["benchmarks"].get("training", {}).get("details", {}).get("gpu_present") and "present (not used)"
        )
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
        REPORT.write_text(report(results))
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    print("\n" + "\n".join(table(results)))
    print(
        f"\nwrote {RESULTS.relative_to(PROJECT_ROOT)} and {REPORT.relative_to(PROJECT_ROOT)} "
        f"({results['elapsed_s'] / 60:.1f} min)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
