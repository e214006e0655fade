"""Shared helpers of the benchmarks: paths, timing, medians, peak memory, result rows.

Every benchmark module exposes ``run(quick: bool, work: Path) -> dict`` returning
``{"rows": [row(...), ...], "details": {...}}``; ``bench/run.py`` turns the rows into
``docs/performance.md`` and the whole dict into ``bench/results/latest.json``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = PROJECT_ROOT / "bench"
TRAIN_CSV = PROJECT_ROOT / "data" / "banking77" / "train.csv"
TEST_CSV = PROJECT_ROOT / "data" / "banking77" / "test.csv"
for _folder in ("plugins", "tools"):
    if str(PROJECT_ROOT / _folder) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT / _folder))


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn()`` took (perf_counter) and what it returned."""
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def log(text: str) -> None:
    print(f"  {text}", flush=True)


def settle(max_wait: float, busy_below: float = 20.0) -> float:
    """Wait (up to ``max_wait`` s) until other processes leave the CPUs mostly idle; return seconds waited.

    The machine may be shared: a 2-thread job on 2 cores slows down several-fold while anything
    else runs, so timed repetitions start in a quiet moment when there is one.
    """
    started = time.monotonic()
    while psutil.cpu_percent(interval=1.0) >= busy_below and time.monotonic() - started < max_wait:
        pass
    return time.monotonic() - started


def _busy_seconds() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def run_measured(
    cmd: list[str], env: dict[str, str] | None = None, cwd: Path = PROJECT_ROOT, log_file: Path | None = None
) -> dict[str, float]:
    """Run a command to completion; wall seconds, peak RSS of its whole process tree, and the
    share of the machine's CPU that other processes used meanwhile (a noise indicator).

    The tree (a Spark job is a Python driver, a JVM and Python workers) is sampled every 0.1 s,
    so short RSS spikes between samples can be missed. Raises CalledProcessError (with the
    log's tail) when the command fails.
    """
    out = open(log_file, "wb") if log_file else subprocess.DEVNULL  # noqa: SIM115 - closed below, after the process ends
    peak, cpu, busy_before, started = 0, {}, _busy_seconds(), time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                tree = []
            rss = 0
            for process in tree:
                try:
                    with process.oneshot():
                        rss += process.memory_info().rss
                        times = process.cpu_times()
                        cpu[(process.pid, process.create_time())] = times.user + times.system
                except psutil.Error:
                    pass
            peak = max(peak, rss)
            time.sleep(0.1)
        seconds = time.perf_counter() - started
    finally:
        if log_file:
            out.close()
    if proc.returncode != 0:
        tail = log_file.read_text(errors="replace")[-3000:] if log_file else ""
        raise subprocess.CalledProcessError(proc.returncode, cmd, output=tail)
    others = _busy_seconds() - busy_before - sum(cpu.values())
    return {
        "seconds": seconds,
        "peak_rss_mb": peak / 2**20,
        "others_cpu_share": min(1.0, max(0.0, others / (seconds * (os.cpu_count() or 1)))),
    }


def job_python() -> str:
    """The job environment's interpreter, as the local runner resolves it."""
    from retrain.paths import job_python as resolve

    return str(resolve())


def row(
    benchmark: str,
    measure: str,
    value: float | str | None,
    unit: str,
    n: int | None = None,
    *,
    baseline: str = "",
    ratio: str = "",
    target: str = "",
    met: bool | None = None,
    note: str = "",
) -> dict[str, Any]:
    """One line of the results table. ``met`` is None where no target applies."""
    return {
        "benchmark": benchmark,
        "measure": measure,
        "value": value,
        "unit": unit,
        "n": n,
        "baseline": baseline,
        "ratio": ratio,
        "target": target,
        "met": met,
        "note": note,
    }


def fmt(value: float, digits: int = 3) -> str:
    """A figure with ``digits`` significant digits, without scientific notation for ordinary sizes."""
    if value == 0:
        return "0"
    if abs(value) < 1:
        return f"{value:.{digits}g}"
    magnitude = len(str(int(abs(value)))) if abs(value) >= 1 else 0
    return f"{value:,.{max(0, digits - magnitude)}f}"


def section_markers(name: str) -> tuple[str, str]:
    """The comments around a benchmark's own section of docs/performance.md."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(name: str, title: str, section: list[str], command: str) -> None:
    """Replace (or add) only benchmark ``name``'s section of docs/performance.md, for a benchmark run on its own."""
    start, end = section_markers(name)
    report = PROJECT_ROOT / "docs" / "performance.md"
    body = "\n".join(
        [
            start,
            f"## {title} (`bench/{name}.py`)",
            "",
            f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `{command}`.",
            "",
            *section,
            end,
        ]
    )
    text = report.read_text() if report.exists() else "# Performance\n"
    if start in text:
        head, rest = text.split(start, 1)
        text = head + body + rest.split(end, 1)[1]
    else:
        marker = "\n## What each benchmark measures"
        text = (
            text.replace(marker, "\n" + body + "\n" + marker, 1)
            if marker in text
            else text.rstrip() + "\n\n" + body + "\n"
        )
    report.write_text(text)
