"""Peak memory of the tasks that run inside an Airflow worker on the aws backend, on moto (an AWS simulator).

    source scripts/env.sh && python bench/worker_memory.py            # 1 GB of raw history
    source scripts/env.sh && python bench/worker_memory.py --size-mb 200

MWAA's small workers share 2 GB among five task slots, so a task that holds its input in memory
takes a slot's share and more. This lands a raw history of ``--size-mb`` (52 weekly partitions)
and a model.tar.gz of half that size in moto's S3 (moto runs in its own process, so its memory is
not counted), then runs each in-worker task in a fresh interpreter of the Airflow environment and
reports its peak RSS (``ru_maxrss``), beside a baseline measured in the same run:

- ``snapshot_raw``, first run: every file is read once (its rows are counted), one file at a time;
- ``snapshot_raw``, a later run: the files' SHA-256 is S3's own and their facts are kept, so
  nothing is downloaded;
- train_model's summary: ``training_summary.json`` streamed out of model.tar.gz, beside reading
  the whole archive into memory (what the operator did before).

Rewrites only its own section of docs/performance.md. Figures, never assertions.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import common

AIRFLOW_PYTHON = str(common.PROJECT_ROOT / ".venv-airflow" / "bin" / "python")
PARTITIONS = 52
START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday; the snapshot covers all 52 weeks
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
BUCKETS = {"dataset": "bench-datasets", "artifact": "bench-artifacts", "golden": "bench-golden"}

# Run in a fresh Airflow-environment interpreter: the task's own code path, then ru_maxrss (KiB on Linux) as JSON.
CHILD = {
    "import_snapshot": "import retrain.snapshot; from retrain.store import get_store; get_store().client",
    "import_summary": "import retrain_airflow.aws_operators; from airflow.providers.amazon.aws.hooks.s3 import S3Hook",
    "snapshot": (
        "import retrain.snapshot as s; from retrain.store import get_store; from datetime import datetime, UTC\n"
        "m = s.snapshot_raw(get_store(), 'bench', datetime(2026,1,5,tzinfo=UTC), datetime(2027,1,4,tzinfo=UTC))\n"
        "extra = {'rows': m['total_rows'], 'files': len(m['files'])}"
    ),
    "summary_streamed": (
        "from retrain_airflow.aws_operators import read_training_summary\n"
        "extra = read_training_summary('s3://bench-artifacts/runs/bench/model.tar.gz')"
    ),
    "summary_whole": (  # the operator's former way: the whole archive in memory, then tarfile over it
        "import io, json, tarfile; from airflow.providers.amazon.aws.hooks.s3 import S3Hook\n"
        "body = S3Hook(aws_conn_id='aws_default').get_key('runs/bench/model.tar.gz', 'bench-artifacts').get()['Body']\n"
        "archive = tarfile.open(fileobj=io.BytesIO(body.read()), mode='r:gz')\n"
        "extra = json.loads(archive.extractfile('training_summary.json').read())"
    ),
}
EPILOGUE = (  # VmHWM: this process image's own peak; ru_maxrss would carry the parent's peak across exec
    "\nimport json, re\n"
    "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
    "print(json.dumps({'peak_kib': hwm, 'extra': extra}))"
)


def child(name: str, env: dict[str, str]) -> dict:
    code = CHILD[name] + ("" if "extra =" in CHILD[name] else "\nextra = None") + EPILOGUE
    started = time.monotonic()
    out = subprocess.run([AIRFLOW_PYTHON, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return {**json.loads(out.strip().splitlines()[-1]), "seconds": time.monotonic() - started}


def raw_partition(index: int, size: int) -> bytes:
    """About ``size`` bytes of intent CSV, each row distinct."""
    import csv

    with open(common.TRAIN_CSV, newline="") as source:
        rows = list(csv.reader(source))[1:]
    out, n = io.StringIO(), 0
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["text", "category"])
    while out.tell() < size:
        text, label = rows[n % len(rows)]
        writer.writerow([f"{text} w{index} r{n}", label])
        n += 1
    return out.getvalue().encode()


def land(endpoint: str, size_mb: int) -> None:
    """The raw history and a model.tar.gz, through the project's own S3Store (every object with S3's SHA-256)."""
    from datetime import timedelta

    import boto3

    from retrain.store import S3Store

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    for bucket in BUCKETS.values():
        client.create_bucket(Bucket=bucket)
    store = S3Store(BUCKETS["dataset"], BUCKETS["artifact"], BUCKETS["golden"], client=client)
    per_partition = size_mb * 1024 * 1024 // PARTITIONS
    for week in range(PARTITIONS):
        day = (START + timedelta(weeks=week)).date()
        store.write_once_bytes(f"raw/bench/dt={day}/part-00000.csv", raw_partition(week, per_partition))
    archive = io.BytesIO()
    weights = os.urandom(size_mb * 1024 * 1024 // 2)
    with tarfile.open(fileobj=archive, mode="w:gz", compresslevel=1) as tar:
        for name, data in (("model.safetensors", weights), ("training_summary.json", b'{"weights_sha256": "x"}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    client.put_object(Bucket=BUCKETS["artifact"], Key="runs/bench/model.tar.gz", Body=archive.getvalue())


def measure(size_mb: int) -> dict[str, dict]:
    """Each in-worker task in a fresh interpreter, in order (the first snapshot keeps the facts the second reads)."""
    from retrain.runner import free_port

    port = free_port()
    server = subprocess.Popen(  # its own process: moto's copy of the data is not in any measured RSS
        [str(Path(AIRFLOW_PYTHON).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        time.sleep(3)
        with tempfile.TemporaryDirectory() as home:
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RETRAIN_"))},
                **CREDENTIALS,
                "AWS_ENDPOINT_URL": endpoint,
                "RETRAIN_BACKEND": "aws",
                "RETRAIN_DATASET_BUCKET": BUCKETS["dataset"],
                "RETRAIN_ARTIFACT_BUCKET": BUCKETS["artifact"],
                "RETRAIN_GOLDEN_BUCKET": BUCKETS["golden"],
                "AIRFLOW_HOME": home,
                "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
                    {
                        "conn_type": "aws",
                        "login": "testing",
                        "password": "testing",
                        "extra": {"region_name": "us-east-1", "endpoint_url": endpoint},
                    }
                ),
            }
            common.log(f"landing {size_mb} MB of raw history and a {size_mb // 2} MB model.tar.gz on moto")
            land(endpoint, size_mb)
            results = {}
            for label, name in (
                ("import_snapshot", "import_snapshot"),
                ("import_summary", "import_summary"),
                ("snapshot_first", "snapshot"),
                ("snapshot_later", "snapshot"),
                ("summary_whole", "summary_whole"),
                ("summary_streamed", "summary_streamed"),
            ):
                common.log(f"measuring {label}")
                results[label] = child(name, env)
            return results
    finally:
        server.terminate()
        server.wait()


def section(size_mb: int, got: dict[str, dict]) -> list[str]:
    mib = {label: value["peak_kib"] / 1024 for label, value in got.items()}
    rows = got["snapshot_first"]["extra"]
    lines = [
        f"Raw history: {size_mb} MB in {PARTITIONS} weekly partitions ({rows['rows']:,} rows, {rows['files']} files); "
        f"model.tar.gz: {size_mb // 2} MB of weights with training_summary.json last. moto (an AWS simulator) ran in "
        "its own process. Peak RSS is the task's interpreter's `VmHWM`, one run each; the baseline is the same "
        "interpreter importing the task's modules (and making its S3 client) and doing nothing.",
        "",
        "| in-worker task | peak RSS | over the baseline | wall | baseline (same run) |",
        "|---|---|---|---|---|",
    ]
    described = {
        "snapshot_first": "snapshot_raw, first run (reads each file once, one at a time; keeps its facts)",
        "snapshot_later": "snapshot_raw, a later run (S3's SHA-256 and the kept facts: no download)",
        "summary_whole": "train_model's summary, whole archive in memory (before)",
        "summary_streamed": "train_model's summary, streamed out of model.tar.gz (now)",
    }
    for label, text in described.items():
        base = "import_snapshot" if label.startswith("snapshot") else "import_summary"
        lines.append(
            f"| {text} | {mib[label]:,.0f} MiB | {mib[label] - mib[base]:+,.0f} MiB | "
            f"{got[label]['seconds']:.1f} s | imports only: {mib[base]:,.0f} MiB |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="raw history size (default 1024 = 1 GB)")
    args = parser.parse_args()
    got = measure(args.size_mb)
    lines = section(args.size_mb, got)
    print("\n".join(lines))
    if args.size_mb >= 1024:
        common.write_section("worker_memory", "In-worker peak memory", lines, "python bench/worker_memory.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
