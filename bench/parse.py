"""DAG parse time.

Measured: in a fresh interpreter per repetition, the wall time to import Airflow's DagBag
and parse the whole ``dags/`` folder (``DagBag(dag_folder=dags/)``; examples are off through
AIRFLOW__CORE__LOAD_EXAMPLES=False). The ``DagBag(...)`` call alone is reported too: it is
what the DAG processor pays on every re-parse, once Airflow is loaded.
Baseline (same run, interleaved): the time to ``import airflow.sdk`` alone in a fresh
interpreter, the floor of any DAG file.
Target: cold parse at most 1 s over the baseline, and no heavy module (torch, transformers,
pandas, pyspark, sagemaker, mlflow, great_expectations) imported by parsing. The top-level
modules parsing adds beyond ``import airflow.sdk`` are listed.

Both backends are measured: ``RETRAIN_BACKEND=local`` and ``aws`` (the Amazon provider's
operators, which load boto3; no AWS call is made, and the buckets are placeholders).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from common import PROJECT_ROOT, log, median, row

HEAVY = ("torch", "transformers", "pandas", "pyspark", "sagemaker", "mlflow", "great_expectations")
TARGET_OVER_BASELINE_S = 1.0

PARSE = """
import json, sys, time
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
t1 = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
t2 = time.perf_counter()
print("BENCH_JSON " + json.dumps({"total_s": t2 - t0, "dagbag_s": t2 - t1, "dags": sorted(bag.dags),
      "errors": {k: str(v) for k, v in bag.import_errors.items()},
      "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""

IMPORT_SDK = """
import json, sys, time
t0 = time.perf_counter()
import airflow.sdk
t1 = time.perf_counter()
print("BENCH_JSON " + json.dumps({"total_s": t1 - t0, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


AWS_PARSE_ENV = {
    "RETRAIN_BACKEND": "aws",
    "RETRAIN_GIT_SHA": "0" * 40,
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def fresh_interpreter(code: str, *args: str, backend_env: dict | None = None) -> dict:
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "RETRAIN_BACKEND": "local", **(backend_env or {})}
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True, cwd=PROJECT_ROOT
    )
    line = next(line for line in reversed(out.stdout.splitlines()) if line.startswith("BENCH_JSON "))
    return json.loads(line.removeprefix("BENCH_JSON "))


def run(quick: bool, work: Path) -> dict:
    reps = 3 if quick else 7
    dags = str(PROJECT_ROOT / "dags")
    fresh_interpreter(IMPORT_SDK)  # warm the OS file cache once; not counted
    fresh_interpreter(PARSE, dags, backend_env=AWS_PARSE_ENV)
    parses, sdks, aws_parses = [], [], []
    for i in range(reps):
        sdks.append(fresh_interpreter(IMPORT_SDK))
        parses.append(fresh_interpreter(PARSE, dags))
        aws_parses.append(fresh_interpreter(PARSE, dags, backend_env=AWS_PARSE_ENV))
        log(
            f"rep {i + 1}/{reps}: parse {parses[-1]['total_s']:.3f}s (DagBag {parses[-1]['dagbag_s']:.3f}s), "
            f"aws {aws_parses[-1]['total_s']:.3f}s, import airflow.sdk {sdks[-1]['total_s']:.3f}s"
        )
    aws_total = median([r["total_s"] for r in aws_parses])
    aws_over = aws_total - median([r["total_s"] for r in sdks])
    aws_heavy = sorted(m for m in aws_parses[-1]["modules"] if m in HEAVY)
    aws_errors = aws_parses[-1]["errors"]
    total, dagbag, sdk = (
        median([r[k] for r in rs]) for rs, k in ((parses, "total_s"), (parses, "dagbag_s"), (sdks, "total_s"))
    )
    over = total - sdk
    added = sorted(
        m for m in set(parses[-1]["modules"]) - set(sdks[-1]["modules"]) if not m.startswith("unusual_prefix_")
    )  # DagBag's name for the DAG file's own module
    heavy = sorted(m for m in parses[-1]["modules"] if m in HEAVY)
    errors = parses[-1]["errors"]
    rows = [
        row(
            "DAG parse",
            "cold parse of dags/ (fresh interpreter: import DagBag + DagBag(dags/))",
            round(total, 3),
            "s",
            reps,
            baseline=f"import airflow.sdk: {sdk:.3f} s",
            ratio=f"+{over:.3f} s over baseline",
            target=f"≤ +{TARGET_OVER_BASELINE_S:g} s over baseline",
            met=over <= TARGET_OVER_BASELINE_S and not errors,
        ),
        row("DAG parse", "DagBag(dags/) call alone (per re-parse, Airflow loaded)", round(dagbag, 4), "s", reps),
        row(
            "DAG parse",
            "heavy modules imported by parsing",
            ", ".join(heavy) or "none",
            "",
            reps,
            target="none of " + ", ".join(HEAVY),
            met=not heavy,
        ),
        row(
            "DAG parse",
            "cold parse of dags/ with RETRAIN_BACKEND=aws (provider operators; no AWS call)",
            round(aws_total, 3),
            "s",
            reps,
            baseline=f"import airflow.sdk: {sdk:.3f} s",
            ratio=f"+{aws_over:.3f} s over baseline; +{aws_total - total:.3f} s over local",
            target=f"≤ +{TARGET_OVER_BASELINE_S:g} s over baseline",
            met=aws_over <= TARGET_OVER_BASELINE_S and not aws_errors,
        ),
        row(
            "DAG parse",
            "heavy modules imported by parsing (aws)",
            ", ".join(aws_heavy) or "none",
            "",
            reps,
            target="none of " + ", ".join(HEAVY),
            met=not aws_heavy,
        ),
    ]
    notes = [
        f"DAG parse: DAGs found {', '.join(parses[-1]['dags'])}; import errors: {errors or 'none'}. "
        f"Top-level modules parsing adds beyond `import airflow.sdk` ({len(added)}, the DAG file's own module not "
        "counted): "
        f"{', '.join(added) or 'none'}."
    ]
    return {
        "rows": rows,
        "notes": notes,
        "details": {
            "reps": reps,
            "parse_total_s": [r["total_s"] for r in parses],
            "dagbag_s": [r["dagbag_s"] for r in parses],
            "import_sdk_s": [r["total_s"] for r in sdks],
            "median_parse_total_s": total,
            "median_dagbag_s": dagbag,
            "median_import_sdk_s": sdk,
            "over_baseline_s": over,
            "modules_added": added,
            "heavy_imported": heavy,
            "dags": parses[-1]["dags"],
            "import_errors": errors,
            "aws_parse_total_s": [r["total_s"] for r in aws_parses],
            "aws_over_baseline_s": aws_over,
            "aws_heavy_imported": aws_heavy,
            "aws_import_errors": aws_errors,
        },
    }
