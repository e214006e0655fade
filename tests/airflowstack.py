"""A tiny project for the tiers that run a real Airflow (tests/integration under ``airflow standalone``,
tests/celery under the Celery deployment): tiny Banking77 data in a fresh store, tiny model configs
and their DAG files, golden v1 published by the project's own seeding code, the environment every
Airflow process gets, and the helpers both tiers use to talk to the running Airflow.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from retrain.intervals import latest_complete_week
from retrain.paths import job_python
from retrain.runner import free_port, stop_process_group
from retrain_tools.airflow_api import AirflowClient, wait_until
from retrain_tools.standalone import PRIVATE_UMASK, private_log, standalone_environment, start_standalone
from tinydata import LABELS

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def tiny_rows(path: Path, per_label: int) -> list[tuple[str, str]]:
    """The first ``per_label`` rows of each of LABELS' intents in a Banking77 CSV."""
    taken: dict[str, int] = {label: 0 for label in LABELS}
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["category"] in taken and taken[row["category"]] < per_label:
                taken[row["category"]] += 1
                rows.append((row["text"], row["category"]))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("text", "category")) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


TINY_DEPLOYMENT = """
deployment:  # tests/airflowstack.py: windows of seconds, for the tiers that run the deployment stage
  shadow: {min_requests: 20, max_minutes: 3, min_agreement: 0.5, max_error_rate: 0.3}
  canary: {percent: 50, min_requests: 10, window_minutes: 0.25}
  poll_seconds: 2
"""
FAULTY_CANARY = "  test_faults: {canary: {error_rate: 1.0}}\n"
"""``<name>_faulty`` models: every canary request fails, so the canary is rolled back automatically."""


def tiny_config(
    config_dir: Path,
    labels_file: Path,
    name: str,
    unreachable_floor: bool = False,
    extra: tuple[tuple[str, str], ...] = (),
) -> Path:
    """The shipped intent config as ``<name>.yaml``, shrunk for tiny data; ``unreachable_floor`` sets a macro F1 floor
    no model reaches; ``intent_timeout`` gets an approval that times out after 18 s; ``extra`` holds more (old, new)
    edits. Every one gets TINY_DEPLOYMENT's windows, and a name ending in ``_faulty`` a canary whose requests all fail
    (FAULTY_CANARY)."""
    text = (PROJECT_ROOT / "config" / "models" / "intent.yaml").read_text()
    replacements = [
        ("name: intent", f"name: {name}"),
        (
            "model_package_group: retrain-intent",
            f"model_package_group: retrain-{name.replace('_', '-')}",
        ),  # one per model
        ("data/banking77/categories.json", str(labels_file)),
        ("retries: 2", "retries: 0"),
        ("  golden_sha256: 5dc02b57ced59ded2839e99f93b714068d5fcb2205af5141ab28e61ae36ac629", "  golden_sha256: null"),
        ("epochs: 30", "epochs: 20"),
        ("min_rows: 20", "min_rows: 10"),
        ("requests: 200", "requests: 20"),
        ("warmup: 20", "warmup: 2"),
        ("min_total_examples: 1000", "min_total_examples: 50"),
        ("min_class_support: 20", "min_class_support: 5"),
        ("per_class_floor: 0.50", "per_class_floor: 0.0"),
        ("per_class_max_regression: 0.10", "per_class_max_regression: 1.0"),
        ("    macro_f1: 0.85\n", "    macro_f1: 0.999\n" if unreachable_floor else "    macro_f1: 0.5\n"),
        ("    accuracy: 0.85\n", "    accuracy: 0.5\n"),
        ("    macro_f1: -0.01\n", "    macro_f1: -1.0\n"),
        ("    accuracy: -0.01\n", "    accuracy: -1.0\n"),
        ("    margin: -0.01 ", "    margin: -1.0 "),
        # These tiers test orchestration, several jobs at once on a loaded 2-core machine: latency is noise there (the
        # gate's own tests cover its latency criteria, which are still scored and listed).
        ("  latency_p50_ms_max: 50\n", "  latency_p50_ms_max: 5000\n"),
        ("  latency_p99_ms_max: 200\n", "  latency_p99_ms_max: 20000\n"),
    ]
    if name == "intent_timeout":
        replacements.append(("response_timeout_hours: 168", "response_timeout_hours: 0.005"))
    for old, new in [*replacements, *extra]:
        assert old in text, old
        text = text.replace(old, new)
    text += TINY_DEPLOYMENT + (FAULTY_CANARY if name.endswith("_faulty") else "")
    path = config_dir / f"{name}.yaml"
    path.write_text(text)
    return path


def tiny_shipped_config(config_dir: Path, name: str, edits: tuple[tuple[str, str], ...]) -> Path:
    """A shipped model's config as is, but for ``edits`` ((old, new) text replacements, each of which must apply),
    fewer retries and timed requests, and no golden pin (the tiny golden set has another hash)."""
    text = (PROJECT_ROOT / "config" / "models" / f"{name}.yaml").read_text()
    pin = next(line for line in text.splitlines() if line.startswith("  golden_sha256:"))
    text = re.sub(r"(?m)^(    requests:) \d+", r"\1 20", text)  # fewer timed requests, whatever the shipped count
    text = re.sub(r"(?m)^(    warmup:) \d+", r"\1 2", text)
    for old, new in [("retries: 2", "retries: 0"), (pin, "  golden_sha256: null"), *edits]:
        assert old in text, old
        text = text.replace(old, new)
    path = config_dir / f"{name}.yaml"
    path.write_text(text)
    return path


def tiny_retrieval_data(
    root: Path, model: str, intents: int = 8, queries: int = 20, golden: int = 8, golden_source: str = "retrieval"
) -> dict[str, object]:
    """data/retrieval cut down to ``intents`` intents: ``queries`` raw pairs and ``golden`` golden queries per intent,
    the golden queries' qrels and the whole corpus (its passage ids stay the labels file). The golden queries come
    from ``data/<golden_source>`` (``reranking``: its golden set, whose ``candidates.jsonl`` rows of the kept queries
    are cut the same way). Returns the raw rows (query, passage_id) and the golden queries' path, with corpus.jsonl,
    qrels.jsonl (and candidates.jsonl) beside it."""
    data, golden_data = PROJECT_ROOT / "data" / "retrieval", PROJECT_ROOT / "data" / golden_source
    passages = [json.loads(line)["passage_id"] for line in (data / "corpus.jsonl").read_text().splitlines()][:intents]
    taken: dict[str, int] = dict.fromkeys(passages, 0)
    rows = []
    with open(data / "train.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["passage_id"] in taken and taken[row["passage_id"]] < queries:
                taken[row["passage_id"]] += 1
                rows.append((row["query"], row["passage_id"]))
    qrels = [json.loads(line) for line in (golden_data / "qrels.jsonl").read_text().splitlines()]
    kept = [q for q in qrels if q["passage_id"] in taken]
    kept = [
        q for i, q in enumerate(kept) if sum(1 for other in kept[:i] if other["passage_id"] == q["passage_id"]) < golden
    ]
    keys = {q["query_id"] for q in kept}
    out = root / f"{model}-golden"
    out.mkdir(parents=True)
    (out / "golden.jsonl").write_text(
        "".join(
            line + "\n"
            for line in (golden_data / "golden.jsonl").read_text().splitlines()
            if json.loads(line)["key"] in keys
        )
    )
    (out / "qrels.jsonl").write_text("".join(json.dumps(q) + "\n" for q in kept))
    (out / "corpus.jsonl").write_bytes((golden_data / "corpus.jsonl").read_bytes())
    if (golden_data / "candidates.jsonl").is_file():
        (out / "candidates.jsonl").write_text(
            "".join(
                line + "\n"
                for line in (golden_data / "candidates.jsonl").read_text().splitlines()
                if json.loads(line)["query_id"] in keys
            )
        )
    return {"rows": rows, "golden": out / "golden.jsonl"}


class TinyProject:
    """Directories and tiny data under ``root``: ``store``, ``airflow``, ``config``, ``dags``, the
    golden CSV and the labels file; ``interval`` is the latest complete week."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store_root, self.airflow_home = root / "store", root / "airflow"
        self.config_dir, self.dags_dir = root / "config", root / "dags"
        self.config_dir.mkdir(parents=True)
        self.labels_file, self.golden_csv = root / "labels.json", root / "golden.csv"
        self.labels_file.write_text(json.dumps(LABELS))
        self.interval = latest_complete_week(datetime.now(UTC))
        self.rows = tiny_rows(PROJECT_ROOT / "data" / "banking77" / "train.csv", 40)
        self.golden = tiny_rows(PROJECT_ROOT / "data" / "banking77" / "test.csv", 12)
        write_csv(self.golden_csv, self.golden)

    def add_model(self, name: str, unreachable_floor: bool = False) -> None:
        tiny_config(self.config_dir, self.labels_file, name, unreachable_floor)

    def land_two_weeks(self, model: str) -> None:
        """Raw partitions of the week before the latest and of the latest; the latest plants an exact
        duplicate, a normalised duplicate and an example of the golden set."""
        start = self.interval[0]
        older, newer = self.rows[::2], self.rows[1::2]
        newer = newer + [self.rows[0], (self.rows[1][0].upper() + "!!", self.rows[1][1]), self.golden[0]]
        write_csv(self.store_root / f"raw/{model}/dt={(start - timedelta(weeks=1)).date()}/part-00000.csv", older)
        write_csv(self.store_root / f"raw/{model}/dt={start.date()}/part-00000.csv", newer)

    def land_past_weeks(self, model: str, weeks: tuple[int, ...] = (3, 2, 1)) -> None:
        """One partition per past week (weeks back from the latest), for backfills."""
        for weeks_back in weeks:
            write_csv(
                self.store_root
                / f"raw/{model}/dt={(self.interval[0] - timedelta(weeks=weeks_back)).date()}/part-00000.csv",
                self.rows[weeks_back::3],
            )

    def sync_dags(self) -> None:
        """One DAG file per config, by the project's own ``dags sync``."""
        from retrain_tools.dagfiles import sync

        sync(self.config_dir, self.dags_dir)

    def env(self, base: dict[str, str], mlflow_tracking_uri: str | None = None) -> dict[str, str]:
        """The environment of every Airflow process and job: this project's store, configs, DAGs and MLflow."""
        return {
            **base,
            "RETRAIN_PROJECT_ROOT": str(PROJECT_ROOT),
            "RETRAIN_HOME": str(self.store_root),
            "RETRAIN_CONFIG_DIR": str(self.config_dir),
            "MLFLOW_TRACKING_URI": mlflow_tracking_uri or f"sqlite:///{self.store_root / 'mlflow.db'}",
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_dir),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,alice:op,bob:op",
            # The DAG files are written before Airflow starts and never change while it runs: the DAG processor parses
            # each once at start, not again every 30 s (an idle stack's CPU halves: 5 CPU-s in 2 min against 10).
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
            "PYTHONPATH": str(PROJECT_ROOT / "plugins"),
            "PATH": f"{Path(sys.executable).parent}:{base['PATH']}",
        }

    def publish_golden(
        self, env: dict[str, str], models: tuple[str, ...], sources: dict[str, Path] | None = None
    ) -> None:
        """Golden v1 of each model through the project's own seeding code (from the tiny golden CSV unless ``sources``
        names
        another), in one process of the environment ``env`` (its store and configs)."""
        pairs = [part for model in models for part in (model, str((sources or {}).get(model, self.golden_csv)))]
        subprocess.run(
            [
                sys.executable,
                "-c",
                (
                    "import sys; from pathlib import Path; from retrain.config import load_model; from retrain.store "
                    "import LocalStore;"
                    "from retrain_tools.seed import publish_golden\n"
                    "for model, source in zip(sys.argv[1::2], sys.argv[2::2]): publish_golden(LocalStore(), "
                    "load_model(model), Path(source), 'v1')"
                ),
                *pairs,
            ],
            env={**env, "PYTHONPATH": f"{PROJECT_ROOT / 'plugins'}:{PROJECT_ROOT / 'tools'}"},
            check=True,
        )


def registry_status_reader(env: dict[str, str]) -> Callable[..., dict]:
    """``registry_status(model)``: aliases, versions and the verified ledger, asked of the job environment."""

    def registry_status(model: str = "intent") -> dict:
        out = subprocess.run(
            [str(job_python()), str(PROJECT_ROOT / "plugins" / "retrain" / "registry.py"), "status", "--model", model],
            env={**env, "PYTHONPATH": f"{PROJECT_ROOT / 'include'}:{PROJECT_ROOT / 'plugins'}"},
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout)

    return registry_status


FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
"""MWAA's auth manager: FAB users with numeric ids, in FAB's tables."""


def create_fab_users(env: dict[str, str], users: tuple[tuple[str, str], ...]) -> dict[str, dict[str, str]]:
    """Under FAB (``env`` names it), migrate the database, which creates FAB's tables, and create ``users`` ((name,
    role), in that order: FAB numbers them 1, 2, …) by tests/fab_users.py. Returns ``{name: {"id", "password"}}``."""
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    made = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("fab_users.py")), *(f"{name}:{role}" for name, role in users)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return json.loads(made.stdout.strip().splitlines()[-1])


def start_fab_airflow(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """What ``airflow standalone`` starts (scheduler, DAG processor, triggerer, API server: LocalExecutor on SQLite), as
    processes of their own under one shell that leads their process group, because standalone forces the simple auth
    manager ("Forcing auth manager to SimpleAuthManager") where these keep the one ``env`` names. Bound to this machine
    and private as standalone is here (``retrain_tools.standalone``); stop it with ``stop_process_group``."""
    components = " & ".join(f"airflow {name}" for name in ("scheduler", "dag-processor", "triggerer", "api-server"))
    with private_log(log_path, truncate=True) as log:
        return subprocess.Popen(
            ["bash", "-c", f"{components} & wait"],
            env=standalone_environment(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=PRIVATE_UMASK,
        )


def logged_in(
    base_url: str,
    airflow_home: Path,
    dag_ids: tuple[str, ...],
    timeout: float = 600,
    fab_users: dict[str, dict[str, str]] | None = None,
) -> AirflowClient:
    """An admin client, once the API server and scheduler are healthy and every DAG in ``dag_ids`` is parsed. Under
    FAB, ``fab_users`` holds the users' passwords (``create_fab_users``); else the simple auth manager generates
    them."""
    client = AirflowClient(base_url, airflow_home)
    client.fab_users = fab_users
    wait_until(client.healthy, timeout, "the API server and scheduler")
    if fab_users is None:
        wait_until(
            lambda: (airflow_home / "simple_auth_manager_passwords.json.generated").exists(), 60, "generated passwords"
        )
    client.login("admin", fab_users["admin"]["password"] if fab_users else None)
    for dag_id in dag_ids:
        wait_until(lambda dag_id=dag_id: client.dag(dag_id), timeout, f"{dag_id} to be parsed")
    return client


def user_factory(client: AirflowClient) -> Callable[[str], AirflowClient]:
    """``as_user(name)``: a client logged in as ``name`` with the password Airflow generated (under FAB, the one
    ``create_fab_users`` set)."""
    fab_users = getattr(client, "fab_users", None)
    return lambda name: AirflowClient(client.base_url, client.airflow_home).login(
        name, fab_users[name]["password"] if fab_users else None
    )


def run_report(client: AirflowClient, dag_id: str, run_id: str, lines: int = 40) -> str:
    """What a failed wait shows: every task's state and the last lines of each failed task's log
    (``$AIRFLOW_HOME/logs``, where the LocalExecutor and the Celery workers on this host write)."""
    states = {ti["task_id"]: (ti["state"], ti.get("try_number")) for ti in client.task_instances(dag_id, run_id)}
    report = [f"{dag_id} {run_id}: " + ", ".join(f"{task}={state}" for task, (state, _) in states.items())]
    run_dir = client.airflow_home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    for task, (state, _) in states.items():
        if state not in ("failed", "up_for_retry", "upstream_failed"):
            continue
        for log in sorted(run_dir.glob(f"task_id={task}/**/attempt=*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            report.append(f"--- {log.relative_to(run_dir)} (last {len(tail)} lines)\n" + "\n".join(tail))
    return "\n".join(report) + "\n"


@contextmanager
def standalone_airflow(
    env: dict[str, str],
    root: Path,
    dag_ids: tuple[str, ...],
    log_name: str = "standalone.log",
    fab_users: tuple[tuple[str, str], ...] | None = None,
) -> Iterator[AirflowClient]:
    """``airflow standalone`` (LocalExecutor on SQLite) with ``env`` (which sets AIRFLOW_HOME) on a free port, logged to
    ``root/<log_name>``; yields an admin client once every DAG in ``dag_ids`` is parsed, and stops everything it
    started. With ``fab_users`` ((name, role) after ``admin``, in order), it runs under FAB, MWAA's auth manager, with
    the same processes that standalone runs (``start_fab_airflow``).
    ``env`` gains the API port (and FAB's auth manager)."""
    port = free_port()
    env.update(
        {
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        }
    )
    users = None
    if fab_users is None:
        proc = start_standalone(env, root / log_name, truncate=True)  # as the demo starts it
    else:
        env["AIRFLOW__CORE__AUTH_MANAGER"] = FAB_AUTH_MANAGER
        users = create_fab_users(env, (("admin", "Admin"), *fab_users))
        proc = start_fab_airflow(env, root / log_name)
    try:
        client = logged_in(f"http://localhost:{port}", Path(env["AIRFLOW_HOME"]), dag_ids, fab_users=users)
        client.process = proc  # for the tests that kill it as a crash would
        yield client
    finally:
        stop_process_group(proc)


@contextmanager
def model_server(env: dict[str, str]) -> Iterator[Any]:
    """The project's model server (``bin/retrain serve``) over the stack's store and configs, on a free port; stopped
    afterwards."""
    from retrain_tools import serving as serving_tools

    root = Path(env["RETRAIN_HOME"])
    client = serving_tools.start(port=free_port(), root=root, env=env)
    try:
        yield client
    finally:
        serving_tools.stop(root)


@contextmanager
def traffic_during(env: dict[str, str], model: str, rps: float = 10) -> Iterator[dict]:
    """``bin/retrain traffic`` against ``model``'s endpoint in a thread while the block runs; the dict it yields gets
    the traffic's summary (requests by status and by answering version) when the block ends."""
    import threading

    from retrain.serving import ServingClient
    from retrain_tools.serving import traffic

    root, summary, stop = Path(env["RETRAIN_HOME"]), {}, threading.Event()
    client = ServingClient(root=root)
    thread = threading.Thread(
        target=lambda: summary.update(
            traffic(model, rps, 3600, client, root, stop, config_dir=Path(env["RETRAIN_CONFIG_DIR"]))
        ),
        daemon=True,
    )
    thread.start()
    try:
        yield summary
    finally:
        stop.set()
        thread.join(timeout=60)
