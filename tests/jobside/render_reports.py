"""Render each case of CASES_JSON (``{name: {"metrics": metrics.json, "latencies": raw latencies}}``) with
``build_report`` (matplotlib lives only in the job environment) to OUT_DIR/<name>.html.

Run by the ``reports`` fixture of tests/jobs/test_report.py, in the job environment (PYTHONPATH=include:plugins):
``python tests/jobside/render_reports.py CASES_JSON OUT_DIR``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from retrain_jobs.report import build_report


def main(argv: list[str]) -> None:
    for name, case in json.loads(Path(argv[0]).read_text()).items():
        (Path(argv[1]) / f"{name}.html").write_text(build_report(case["metrics"], case["latencies"]), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
