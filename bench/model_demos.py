"""Model demos: each further model's `make demo MODEL=<name>`, its wall time and golden quality against its
targets.

Runs scripts/demo.py --model <name> as a person would (seeding, `airflow standalone`, run 1 for
the previous interval, run 2 created by the scheduler, approvals over REST) with RETRAIN_HOME,
AIRFLOW_HOME and MLflow in a fresh directory per model, then reads each run's metrics.json and
gate.json from that store. Wall time is the demo's own, seeding and Airflow's start included.
Baselines are the previous recipe's figures recorded in docs/performance.md (a model's previous
recipe is not retrained here). Models: those of TARGETS whose config exists; intent's demo is the
pipeline benchmark.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from common import PROJECT_ROOT, log, row


@dataclass(frozen=True)
class Target:
    demo_s: float  # the demo finishes within this, training included
    metric: str  # the golden headline metric with a quality target
    floor: float | None  # an absolute target; None: the target is to beat the same run's baseline block
    baseline: str  # the figure the target is judged beside


TARGETS = {
    "sentiment": Target(180.0, "macro_f1", 0.90, "frozen linear probe (previous recipe): 0.8924"),
    "embedding_adapter": Target(300.0, "recall_at_10", None, "the frozen encoder, scored in the same run"),
    "reranker": Target(360.0, "ndcg_at_10", None, "the first-stage order, scored in the same run"),
    "llm_lora": Target(480.0, "format_exact_match", None, "the base model without adapter, scored in the same run"),
}
WALL = re.compile(r"^wall time: (\d+)s$", re.M)


def demo(model: str, work: Path) -> dict:
    """One demo in fresh state: its exit status, wall time and the runs' golden figures and gate decisions."""
    from retrain.runner import free_port

    home, airflow_home = work / model / "home", work / model / "airflow"
    env = {
        **os.environ,
        "RETRAIN_HOME": str(home),
        "AIRFLOW_HOME": str(airflow_home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
    }
    log(f"model_demos: make demo MODEL={model} in {work / model}")
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts" / "demo.py"), "--model", model, "--port", str(free_port())],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    (work / f"{model}-demo.log").write_text(done.stdout + done.stderr)
    wall = WALL.search(done.stdout)
    if done.returncode != 0 or not wall:
        raise RuntimeError(f"demo of {model} exited {done.returncode}; see {work / f'{model}-demo.log'}")
    runs = []
    for run_dir in sorted((home / "runs" / model).iterdir(), key=lambda p: p.stat().st_mtime):
        metrics = sorted(run_dir.glob("evaluate_model/try-*/metrics.json"))
        gate = sorted(run_dir.glob("gate_on_metrics/try-*/gate.json"))
        if metrics and gate:
            decision = json.loads(gate[-1].read_text())
            figures = json.loads(metrics[-1].read_text())
            runs.append(
                {
                    "run": run_dir.name,
                    "challenger": figures["challenger"],
                    "baseline": figures.get("baseline"),
                    "decision": decision["decision"],
                    "failed": [c["name"] for c in decision["criteria"] if c["verdict"] == "fail"],
                }
            )
    return {"wall_s": float(wall.group(1)), "runs": runs}


def run(quick: bool, work: Path) -> dict:
    from retrain.config import ConfigError, load_model

    rows, details = [], {}
    for model, target in TARGETS.items():
        try:
            load_model(model)
        except ConfigError:
            continue  # not shipped yet
        result = details[model] = demo(model, work)
        rows.append(
            row(
                "Model demos",
                f"{model}: demo wall time (seeding, Airflow start, two runs)",
                result["wall_s"],
                "s",
                1,
                target=f"≤ {target.demo_s / 60:g} min",
                met=result["wall_s"] <= target.demo_s,
            )
        )
        for i, r in enumerate(result["runs"], 1):
            value = r["challenger"][target.metric]
            extra = {k: round(v, 4) for k, v in r["challenger"].items() if k.endswith("_rate") and isinstance(v, float)}
            if target.floor is None:  # beat the baseline block of the same run
                base = r["baseline"][target.metric]
                baseline, goal, met = f"{target.baseline}: {base:.4f}", f"> {base:.4f}", value > base
            else:
                baseline, goal, met = target.baseline, f"≥ {target.floor}", value >= target.floor
            rows.append(
                row(
                    "Model demos",
                    f"{model}: golden {target.metric}, run {i} (gate: {r['decision']}"
                    + (f", failed {', '.join(r['failed'])}" if r["failed"] else "")
                    + ")",
                    round(value, 4),
                    "",
                    1,
                    baseline=baseline,
                    target=goal,
                    met=met,
                    note=", ".join(f"{k} {v}" for k, v in extra.items()),
                )
            )
    return {"rows": rows, "notes": [], "details": details}
