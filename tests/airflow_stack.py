"""A real Airflow for the tiers that run DAGs end to end, and the tiny data they run on.

``standalone_airflow`` starts ``airflow standalone`` (scheduler, API server, DAG processor,
triggerer; LocalExecutor on SQLite) on a free port and stops it with everything it started.
The tiny data are Banking77 rows (data/banking77, CC BY 4.0): five intents.
"""

from __future__ import annotations

import csv
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from retrain.airflow_api import AirflowClient, wait_until
from retrain.runner import stop_process_group

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LABELS = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "pin_blocked"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_rows(path: Path, per_label: int) -> list[tuple[str, str]]:
    taken: dict[str, int] = {label: 0 for label in LABELS}
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["category"] in taken and taken[row["category"]] < per_label:
                taken[row["category"]] += 1
                rows.append((row["text"], row["category"]))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["text", "category"])
        writer.writerows(rows)


def tiny_config(config_dir: Path, labels_file: Path, name: str, unreachable_floor: bool = False, timeout: bool = False,
                extra: list[tuple[str, str]] = ()) -> Path:
    """The shipped intent config as ``<name>.yaml``, shrunk for tiny data; ``unreachable_floor`` sets a macro-F1 floor no
    model reaches (its runs show a gate rejection), ``timeout`` an 18 s approval timeout, ``extra`` more (old, new) edits."""
    text = (PROJECT_ROOT / "config" / "models" / "intent.yaml").read_text()
    replacements = [
        ("name: intent", f"name: {name}"),
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
    ]
    if timeout:
        replacements.append(("response_timeout_hours: 168", "response_timeout_hours: 0.005"))
    for old, new in [*replacements, *extra]:
        assert old in text, old
        text = text.replace(old, new)
    path = config_dir / f"{name}.yaml"
    path.write_text(text)
    return path


@contextmanager
def standalone_airflow(env: dict[str, str], root: Path, dag_ids: list[str], log_name: str = "standalone.log") -> Iterator[AirflowClient]:
    """``airflow standalone`` with ``env`` (which must set AIRFLOW_HOME), logged to ``root/<log_name>``; yields an
    admin client once every DAG in ``dag_ids`` is parsed. ``env`` gains the API port."""
    airflow_home = Path(env["AIRFLOW_HOME"])
    port = free_port()
    env.update({"AIRFLOW__API__PORT": str(port), "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/"})
    with open(root / log_name, "wb") as log:
        proc = subprocess.Popen(["airflow", "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            client = AirflowClient(f"http://localhost:{port}", airflow_home)
            wait_until(client.healthy, 240, "the API server and scheduler")
            wait_until(lambda: (airflow_home / "simple_auth_manager_passwords.json.generated").exists(), 60, "generated passwords")
            client.login("admin")
            for dag_id in dag_ids:
                wait_until(lambda: client.dag(dag_id), 240, f"{dag_id} to be parsed")
            yield client
        finally:
            stop_process_group(proc)
