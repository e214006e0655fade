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
import threading
import time
from pathlib import Path
from typing import Any, Callable

import psutil

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = PROJECT_ROOT / "bench"
TRAIN_CSV = PROJECT_ROOT / "data" / "banking77" / "train.csv"
TEST_CSV = PROJECT_ROOT / "data" / "banking77" / "test.csv"
if str(PROJECT_ROOT / "plugins") not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT / "plugins"))


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn()`` took (perf_counter) and what it returned."""
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def log(text: str) -> None:
    print(f"  {text}", flush=True)


def run_measured(cmd: list[str], env: dict[str, str] | None = None, cwd: Path = PROJECT_ROOT,
                 log_file: Path | None = None) -> dict[str, float]:
    """Run a command to completion; wall seconds and peak RSS of its whole process tree.

    RSS is sampled every 0.1 s over the process and all its descendants (a Spark job is a
    Python driver, a JVM and Python workers), so short spikes between samples can be missed.
    Raises CalledProcessError (with the log's tail) when the command fails.
    """
    out = open(log_file, "wb") if log_file else subprocess.DEVNULL
    peak, started = 0, time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [ps, *ps.children(recursive=True)]
                peak = max(peak, sum(_rss(p) for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.1)
        seconds = time.perf_counter() - started
    finally:
        if log_file:
            out.close()
    if proc.returncode != 0:
        tail = log_file.read_text(errors="replace")[-3000:] if log_file else ""
        raise subprocess.CalledProcessError(proc.returncode, cmd, output=tail)
    return {"seconds": seconds, "peak_rss_mb": peak / 2**20}


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


class PeakRss:
    """Peak RSS of this process while the ``with`` block runs (sampled every 10 ms)."""

    def __enter__(self) -> "PeakRss":
        self.peak, self._stop = _rss(psutil.Process()), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss(me))

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = self.peak / 2**20


def job_python() -> str:
    """The job environment's interpreter, as the local runner resolves it."""
    from retrain.paths import job_python as resolve

    return str(resolve())


def row(benchmark: str, measure: str, value: float | str | None, unit: str, n: int | None = None, *,
        baseline: str = "", ratio: str = "", target: str = "", met: bool | None = None, note: str = "") -> dict[str, Any]:
    """One line of the results table. ``met`` is None where no target applies."""
    return {"benchmark": benchmark, "measure": measure, "value": value, "unit": unit, "n": n, "baseline": baseline,
            "ratio": ratio, "target": target, "met": met, "note": note}


def fmt(value: float, digits: int = 3) -> str:
    """A figure with ``digits`` significant digits, without scientific notation for ordinary sizes."""
    if value == 0:
        return "0"
    if abs(value) < 1:
        return f"{value:.{digits}g}"
    magnitude = len(str(int(abs(value)))) if abs(value) >= 1 else 0
    return f"{value:,.{max(0, digits - magnitude)}f}"
