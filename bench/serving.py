"""The model server's cost, measured beside same-run baselines: figures and ratios, never assertions.

    source scripts/env.sh && python bench/serving.py                 # about 5 minutes
    source scripts/env.sh && python bench/serving.py --requests 300

In fresh temporary directories (a store, MLflow on SQLite), it trains two intent classifiers (the shipped
architecture and base model, on 5 Banking77 intents, 2 epochs: latency depends on the encoder, not on the label
count), registers them as v1 and v2, starts the project's model server (``bin/retrain serve``'s process) and measures:

- **serving overhead**: p50/p99 latency and requests/s of single-text requests through the endpoint (HTTP, JSON,
  routing, metrics), against the same model loaded and called directly in one process of the job environment, one
  torch thread in both (the server's default);
- **the shadow's cost**: the primary's p99 with a shadow (v2) beside it, against the same endpoint without one,
  in alternating blocks of requests so that drift in the machine's load falls on both;
- **time to recover** from a rollback, from the client's side: with v2 serving and traffic at 20 requests/s, the
  admin call that sends 100% back to v1 (a version the server has not loaded: it loads it and checks its digest),
  until every response carries v1. The rollback DAG adds its own scheduling to this (bench/pipeline.py measures
  the DAG's rollback).

Only the intent model is measured: the other task types' endpoints are the same server. Rewrites only its own
section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common

sys.path.insert(0, str(common.PROJECT_ROOT / "tests"))  # the jobs tier's tiny channels and training spec

TEXTS = [
    "I lost my card",
    "my card has not arrived yet",
    "how do I top up by bank transfer",
    "the exchange rate on my payment was wrong",
    "why was my card declined at the shop",
]
DIRECT = """
import json, sys, time, torch
torch.set_num_threads(1)
sys.path[:0] = [sys.argv[3], sys.argv[4]]
from retrain_jobs.tasks.text_classification import train as task
model = task.load(sys.argv[1], sys.argv[2])
texts, n = json.loads(sys.argv[5]), int(sys.argv[6])
for i in range(20):
    task.predict(model, [texts[i % len(texts)]])
times = []
for i in range(n):
    t = time.perf_counter(); task.predict(model, [texts[i % len(texts)]]); times.append(time.perf_counter() - t)
print(json.dumps(times))
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def train_and_register(root: Path, env: dict[str, str]) -> list[dict]:
    from tinydata import tiny_channels
    from trainspec import train_job, training_spec

    (root / "dataset").mkdir()
    channels = tiny_channels(root / "dataset", 24, 6)
    models = []
    for seed in (7, 8):
        arguments = {
            "labels-file": str(channels["labels"]),
            "dataset-version": "ds-bench",
            "epochs": "2",
            "batch-size": "16",
            "head-learning-rate": "0.05",
            "threads": "2",
            "seed": str(seed),
        }
        model = train_job(training_spec(channels, root / f"m{seed}", arguments, {}), env)
        tags = {"dataset_version": "ds-bench", "git_sha": "bench", "airflow_run_id": f"bench-{seed}"}
        tags["weights_digest"] = model["weights_digest"]
        subprocess.run(
            [common.job_python(), str(common.PROJECT_ROOT / "plugins" / "retrain" / "registry.py"), "register"]
            + ["--model", "intent", "--model-dir", model["model_dir"], "--run-id", model["mlflow_run_id"]]
            + ["--tags-json", json.dumps(tags), "--evidence-json", "{}"],
            env=env,
            check=True,
            capture_output=True,
        )
        models.append(model)
    return models


def timed_requests(client, n: int) -> list[float]:
    times = []
    for i in range(n):
        started = time.perf_counter()
        code, _, _ = client.invoke("intent", [TEXTS[i % len(TEXTS)]])
        times.append(time.perf_counter() - started)
        if code != 200:
            raise RuntimeError(f"the endpoint answered {code}")
    return times


def recovery(client, spec_from, spec_to, target: int) -> dict:
    """Traffic at 20 requests/s on ``spec_from``; set ``spec_to``; seconds until every response carries ``target``."""
    answers: list[tuple[float, str]] = []
    stop = threading.Event()

    def send() -> None:
        i = 0
        while not stop.is_set():
            _, headers, _ = client.invoke("intent", [TEXTS[i % len(TEXTS)]])
            answers.append((time.perf_counter(), headers.get("x-retrain-version")))
            i += 1
            stop.wait(0.05)

    client.set_endpoint(spec_from)
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    time.sleep(2)
    triggered = time.perf_counter()
    client.set_endpoint(spec_to)
    time.sleep(3)
    stop.set()
    thread.join()
    after = [(t, v) for t, v in answers if t >= triggered]
    last_other = max((t for t, v in after if v != str(target)), default=triggered)
    return {"seconds": last_other - triggered, "requests_after": len(after)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1200, help="timed requests per measurement")
    parser.add_argument("--blocks", type=int, default=6, help="alternating blocks for the shadow's cost")
    args = parser.parse_args()
    from retrain import serving
    from retrain.runner import free_port
    from retrain.serving import EndpointSpec
    from retrain_tools import serving as tools

    root = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    env = {
        **os.environ,
        "RETRAIN_HOME": str(root / "store"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "PYTHONPATH": f"{common.PROJECT_ROOT / 'include'}:{common.PROJECT_ROOT / 'plugins'}",
        "HF_HUB_OFFLINE": "1",
    }
    common.log("training and registering two intent classifiers")
    models = train_and_register(root, env)
    common.settle(60)
    direct = json.loads(
        subprocess.run(
            [common.job_python(), "-c", DIRECT, models[0]["model_dir"], models[0]["weights_digest"]]
            + [str(common.PROJECT_ROOT / "include"), str(common.PROJECT_ROOT / "plugins")]
            + [json.dumps(TEXTS), str(args.requests)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.splitlines()[-1]
    )
    client = tools.start(port=free_port(), root=root / "store", env=env)
    try:
        client.set_endpoint(EndpointSpec("intent", primary=1))
        timed_requests(client, 20)  # warm-up
        endpoint = timed_requests(client, args.requests)
        alone, shadowed = [], []
        for _ in range(args.blocks):
            client.set_endpoint(EndpointSpec("intent", primary=1))
            alone += timed_requests(client, args.requests // args.blocks)
            client.set_endpoint(EndpointSpec("intent", primary=1, shadow=2))
            shadowed += timed_requests(client, args.requests // args.blocks)
        compared = next(s for s in client.stats("intent")["slots"] if s["variant"] == "shadow")
        tools.stop(root / "store")
        serving.endpoint_path("intent", root / "store").unlink()  # a fresh server with nothing loaded
        client = tools.start(port=free_port(), root=root / "store", env=env)
        recovered = recovery(client, EndpointSpec("intent", primary=2), EndpointSpec("intent", primary=1), 1)
    finally:
        tools.stop(root / "store")

    ms = lambda v: f"{1000 * v:.1f} ms"  # noqa: E731
    d50, d99, e50, e99 = (percentile(x, q) for x in (direct, endpoint) for q in (0.5, 0.99))
    a99, s99 = percentile(alone, 0.99), percentile(shadowed, 0.99)
    lines = [
        f"Intent classifier (the shipped base model, one torch thread), {args.requests} sequential single-text "
        "requests each; medians and p99 of wall time per request, client side for the endpoint.",
        "",
        "| measure | value | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|",
        f"| endpoint p50 | {ms(e50)} | direct call {ms(d50)} | {e50 / d50:.2f}× (+{ms(e50 - d50)}) | |",
        f"| endpoint p99 | {ms(e99)} | direct call {ms(d99)} | {e99 / d99:.2f}× | |",
        f"| endpoint requests/s (sequential) | {len(endpoint) / sum(endpoint):.0f} | direct "
        f"{len(direct) / sum(direct):.0f} | {sum(direct) / sum(endpoint):.2f}× | |",
        f"| primary p99 with a shadow | {ms(s99)} | no shadow {ms(a99)} | {s99 / a99:.3f}× "
        f"({100 * (s99 / a99 - 1):+.1f}%) | ≤ +5% {'met' if s99 <= 1.05 * a99 else 'not met'} |",
        f"| primary p50 with a shadow | {ms(percentile(shadowed, 0.5))} | no shadow {ms(percentile(alone, 0.5))} | "
        f"{percentile(shadowed, 0.5) / percentile(alone, 0.5):.3f}× | |",
        f"| shadow copies compared / skipped | {compared['compared']} / {compared['shadow_skipped']} | "
        f"{len(shadowed)} requests | | |",
        f"| time to recover, client side (admin call → every answer from v1) | {recovered['seconds']:.2f} s | | | "
        f"≤ 5 s {'met' if recovered['seconds'] <= 5 else 'not met'} |",
        "",
        f"Shadow: {args.blocks} alternating blocks of {args.requests // args.blocks} requests with and without it. "
        f"Recovery: {recovered['requests_after']} requests after the call; v1 was not loaded, so the figure includes "
        "loading it and checking its digest. Machine: "
        f"{os.cpu_count()} CPUs; median of the direct calls {statistics.median(direct) * 1000:.1f} ms.",
        "",
    ]
    print("\n".join(lines))
    common.write_section("serving", "Serving: overhead, shadow cost, recovery", lines, "python bench/serving.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
