"""``bin/retrain serve`` and ``bin/retrain traffic``: start, stop and inspect the local model server, and replay
production-like requests against a model's endpoint.

    bin/retrain serve                       # start it in the background (stays up across runs); prints its URL
    bin/retrain serve --status              # what each endpoint serves
    bin/retrain serve --stop
    bin/retrain traffic intent --rps 5 --seconds 120

The server process is ``include/retrain_serving/server.py`` in the job environment (it loads the models). Its state
lives under the store root's ``serving/``: the endpoint specs, ``server.json`` (its URL and pid), ``admin-token``
(0600) and ``server.log``.

Traffic replays the texts of the model's **raw partitions** (unlabelled: the labels are dropped; never the golden set),
in a fixed shuffled order, at a fixed rate from a few client threads. A reranker's request needs candidates: each
query gets the ``CANDIDATES`` corpus passages that share the most words with it (a stand-in for a first-stage
retriever).
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from retrain import serving
from retrain.paths import INCLUDE_DIR, PROJECT_ROOT, job_python, store_root
from retrain.serving import ServerUnavailable, ServingClient, ServingError

CANDIDATES = 20
PRIVATE_UMASK = 0o077


def running(root: Path | None = None) -> ServingClient | None:
    """A client of the server that answers at the address it wrote, or None."""
    try:
        client = ServingClient(root=root, timeout=5)
        client.endpoints()
        return client
    except ServingError:
        return None


def start(
    port: int = serving.DEFAULT_PORT, root: Path | None = None, wait_s: float = 300, env: dict[str, str] | None = None
) -> ServingClient:
    """Start the server in the background (its own session; it outlives this command) and wait until it answers.
    ``env``: the server's environment (default: this process's), its store root set to ``root``."""
    root = root or store_root()
    if client := running(root):
        return client
    address = serving.address_path(root)
    address.unlink(missing_ok=True)  # a stale address from a server that died
    log_path = serving.serving_dir(root) / "server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = {**(env or os.environ), "RETRAIN_HOME": str(root), "PYTHONPATH": f"{INCLUDE_DIR}:{PROJECT_ROOT / 'plugins'}"}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(job_python()), str(INCLUDE_DIR / "retrain_serving" / "server.py"), "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=PRIVATE_UMASK,
        )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ServerUnavailable(f"the model server exited with {proc.returncode}; {log_path} ends:\n{tail}")
        if address.exists() and (client := running(root)):
            return client
        time.sleep(0.5)
    raise ServerUnavailable(f"the model server did not answer within {wait_s:.0f} s; see {log_path}")


def stop(root: Path | None = None, timeout: float = 30) -> bool:
    """Stop the server this store's address file names; False when none runs."""
    address = serving.address_path(root or store_root())
    try:
        pid = json.loads(address.read_text())["pid"]
    except (FileNotFoundError, ValueError, KeyError):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        address.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            address.unlink(missing_ok=True)
            return True
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    address.unlink(missing_ok=True)
    return True


def endpoint_line(model: str) -> str:
    """One line for ``bin/retrain status``: what the model's endpoint serves, or why nothing does."""
    client = running()
    if client is None:
        return "model server not running (bin/retrain serve)"
    spec = client.endpoints().get(model)
    if spec is None:
        return f"nothing deployed at {client.url}/endpoints/{model}"
    if "primary" not in spec:
        return f"not serving: {spec['problem']}"
    return describe(client, {model: spec}).splitlines()[1].split(": ", 1)[1] + f" ({client.url})"


def describe(client: ServingClient, endpoints: dict | None = None) -> str:
    lines = [f"model server at {client.url}"]
    for model, spec in sorted((client.endpoints() if endpoints is None else endpoints).items()):
        if "problem" in spec and "primary" not in spec:
            lines.append(f"  {model}: not serving ({spec['problem']})")
            continue
        parts = [f"primary v{spec['primary']}"]
        if spec.get("canary"):
            parts.append(f"canary v{spec['canary']} at {spec['canary_weight']:.0%}")
        if spec.get("shadow"):
            parts.append(f"shadow v{spec['shadow']}")
        lines.append(f"  {model}: {', '.join(parts)}")
    return "\n".join(lines)


# --- traffic ----------------------------------------------------------------------------------------------------------


def raw_texts(model: str, root: Path | None = None, config_dir: Path | None = None) -> list[str]:
    """The texts of every raw partition of ``model`` (their labels dropped), oldest partition first."""
    from retrain.config import load_model

    config = load_model(model, config_dir)
    files = sorted((root or store_root()).glob(f"raw/{model}/dt=*/*.csv"))
    texts = []
    for path in files:
        with open(path, newline="") as handle:
            texts += [
                row[config.data.text_column] for row in csv.DictReader(handle) if row.get(config.data.text_column)
            ]
    if not texts:
        raise ServingError(
            f"no raw partitions of {model} under {(root or store_root()) / 'raw' / model}: nothing to replay"
        )
    return texts


def requests_for(model: str, root: Path | None = None, seed: int = 0, config_dir: Path | None = None) -> list:
    """The instances traffic sends, one per request, in a fixed shuffled order."""
    from retrain.config import load_model

    config = load_model(model, config_dir)
    texts = raw_texts(model, root, config_dir)
    random.Random(seed).shuffle(texts)
    if config.task != "cross_encoder_reranking":
        return texts
    passages = [json.loads(line) for line in config.data.corpus_path().read_text().splitlines() if line.strip()]
    words = [set(p["text"].lower().split()) for p in passages]

    def candidates(query: str) -> list[dict]:
        q = set(query.lower().split())
        ranked = sorted(range(len(passages)), key=lambda i: (-len(q & words[i]), i))[:CANDIDATES]
        return [
            {"passage_id": passages[i]["passage_id"], "text": passages[i]["text"], "score": float(len(q & words[i]))}
            for i in ranked
        ]

    return [{"query": text, "candidates": candidates(text)} for text in texts]


def traffic(
    model: str,
    rps: float,
    seconds: float,
    client: ServingClient | None = None,
    root: Path | None = None,
    stop_event: threading.Event | None = None,
    threads: int = 4,
    config_dir: Path | None = None,
) -> dict:
    """Send ``rps`` single-instance requests a second for ``seconds`` (or until ``stop_event``); returns the counts by
    status and by answering version, and the client-side latency percentiles."""
    client = client or ServingClient(root=root)
    instances = requests_for(model, root, config_dir=config_dir)
    stop_event = stop_event or threading.Event()
    statuses, versions, latencies = Counter(), Counter(), []
    lock = threading.Lock()

    def one(instance) -> None:
        started = time.perf_counter()
        try:
            code, headers, _ = client.invoke(model, [instance])
        except ServerUnavailable:
            code, headers = 0, {}  # status 0: nothing answered
        elapsed = time.perf_counter() - started
        version = headers.get(serving.VERSION_HEADER.lower())
        with lock:
            statuses[code] += 1
            if version:
                versions[f"v{version}"] += 1
            latencies.append(elapsed)

    begin = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        i = 0
        while not stop_event.is_set() and time.monotonic() - begin < seconds:
            due = begin + i / rps
            if (wait := due - time.monotonic()) > 0:
                stop_event.wait(wait)
                continue
            pool.submit(one, instances[i % len(instances)])
            i += 1
    latencies.sort()

    def pct(q: float) -> float | None:
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) if latencies else None

    return {
        "model": model,
        "sent": sum(statuses.values()),
        "status": dict(statuses),
        "versions": dict(versions),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "seconds": round(time.monotonic() - begin, 1),
    }


def main_serve(args) -> int:
    if args.stop:
        print("stopped the model server" if stop() else "no model server was running")
        return 0
    if args.status:
        client = running()
        if client is None:
            print(f"no model server is running for {store_root()}; start it with `bin/retrain serve`", file=sys.stderr)
            return 1
        print(describe(client))
        return 0
    client = start(args.port)
    print(describe(client))
    print(f"log: {serving.serving_dir() / 'server.log'}; stop it with `bin/retrain serve --stop`")
    return 0


def main_traffic(args) -> int:
    summary = traffic(args.model, args.rps, args.seconds)
    print(json.dumps(summary, indent=2))
    return 0 if summary["sent"] and set(summary["status"]) <= {200} else 1
