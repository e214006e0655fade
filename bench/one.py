"""Run one benchmark on its own and replace only its section of docs/performance.md.

    source scripts/env.sh && python bench/one.py deploy
    source scripts/env.sh && python bench/one.py parse --quick

``make bench`` rewrites the whole report; this is for a figure measured between full runs (the
section says when and by which command). The benchmark's rows keep the report's columns:
median, n, the baseline from the same run, the ratio and the target.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path

import run
from common import write_section


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=run.BENCHMARKS)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix=f"retrain-bench-{args.name}-"))
    run.isolate(work)
    module = importlib.import_module(args.name)
    started = time.monotonic()
    outcome = module.run(args.quick, work / args.name)
    load = run.psutil.getloadavg()[0]
    section = [
        *run.table({"order": [args.name], "benchmarks": {args.name: outcome}}),
        "",
        *(f"- {note}" for note in outcome.get("notes", [])),
        *outcome.get("section", []),
        f"- {time.monotonic() - started:.0f} s in all; load average (1 min) at the end {load:.2f}",
    ]
    title = (module.__doc__ or args.name).strip().splitlines()[0].split(":")[0].rstrip(".")
    write_section(args.name, title, section, f"python bench/one.py {' '.join(sys.argv[1:])}")
    print("\n".join(section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
