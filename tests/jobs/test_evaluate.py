"""include/retrain_jobs/evaluate.py, run as the runner runs it: a subprocess of the job environment.

Two tiny real classifiers (a 2-layer BERT built from a config on the packaged MiniLM
tokenizer, different seeds, the champion with its labels in another order) are scored on
a small golden set published through the store. Three evaluation runs in all, because each
pays for importing torch: challenger only, challenger + champion (+ MLflow), tampered golden.
The Airflow environment has no numpy or sklearn, so expected figures are recomputed here
in plain Python from the paired per-example arrays.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from jobscripts import JOBSIDE  # tests/ is on pytest's pythonpath
from retrain.paths import INCLUDE_DIR, PROJECT_ROOT, job_python
from retrain.store import LocalStore, write_manifest_and_publish

pytestmark = pytest.mark.skipif(not job_python().exists(), reason="job environment not installed")

SCRIPT = INCLUDE_DIR / "retrain_jobs" / "evaluate.py"
LABELS = ["card_arrival", "card_linking", "exchange_rate", "lost_or_stolen_card", "refund_not_showing_up"]
# Four of the five labels appear in the golden set: the absent one must still get a per-class entry.
TEXTS = {
    "card_arrival": [
        "when will my card arrive",
        "my card has not come yet",
        "card still not delivered",
        "how long for the new card",
        "where is my card",
        "card delivery is late",
    ],
    "card_linking": [
        "how do i link my card",
        "add my card to the app",
        "link an existing card",
        "connect card to account",
        "card will not link",
        "linking a second card",
    ],
    "exchange_rate": [
        "what is the exchange rate",
        "rate for euros today",
        "how are rates calculated",
        "exchange rate seems wrong",
        "currency conversion rate",
        "is the rate fixed",
    ],
    "lost_or_stolen_card": [
        "i lost my card",
        "my card was stolen",
        "someone took my wallet",
        "block my lost card",
        "card missing since yesterday",
        "report a stolen card",
    ],
}


def job_env(**extra: str) -> dict[str, str]:
    """The runner's job environment: include/ and plugins/ importable, hub offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "MLFLOW"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(INCLUDE_DIR), str(PROJECT_ROOT / "plugins")]),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        **extra,
    )
    return env


def run_evaluate(
    output_dir: Path, golden_dir: Path, models: Path, *extra: str, env: dict | None = None
) -> subprocess.CompletedProcess:
    cmd = [
        str(job_python()), str(SCRIPT),
        "--challenger-dir", str(models / "challenger"),
        "--golden-dir", str(golden_dir),
        "--output-dir", str(output_dir),
        "--batch-size", "8",
        "--latency-requests", "20",
        "--latency-warmup", "2",
        "--latency-threads", "1",
        *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, env=env or job_env(), capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """Challenger and champion model dirs, plus an MLflow run to log into."""
    root = tmp_path_factory.mktemp("models")
    db = f"sqlite:///{root / 'mlflow.db'}"
    proc = subprocess.run(
        [str(job_python()), str(JOBSIDE / "tiny_classifiers.py"), str(root), json.dumps(LABELS), db],
        env=job_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    built = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"root": root, "tracking_uri": db, "run_id": built["run_id"], "digests": built["digests"]}


@pytest.fixture(scope="module")
def golden(tmp_path_factory) -> Path:
    """A published golden version, written through the store like the real one."""
    store = LocalStore(tmp_path_factory.mktemp("store"))
    key = "golden/intent/v1"
    staging = store.staging_dir(key)
    rows = [
        {"key": f"g{i:02d}-{label}", "text": text, "label": label, "label_id": LABELS.index(label)}
        for label, texts in TEXTS.items()
        for i, text in enumerate(texts)
    ]
    rows.reverse()  # the script must put examples in key order itself
    (staging / "golden.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_manifest_and_publish(store, staging, key, {"golden_version": "v1", "model": "intent"})
    return store.path(key)


@pytest.fixture(scope="module")
def challenger_only(models, golden, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("eval-challenger")
    return run_evaluate(out, golden, models["root"]), out


@pytest.fixture(scope="module")
def with_champion(models, golden, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("eval-champion")
    proc = run_evaluate(
        out, golden, models["root"],
        "--champion-dir", str(models["root"] / "champion"), "--champion-version", "3",
        "--challenger-digest", models["digests"]["challenger"], "--champion-digest", models["digests"]["champion"],
        "--mlflow-run-id", models["run_id"],
        env=job_env(MLFLOW_TRACKING_URI=models["tracking_uri"]),
    )  # fmt: skip
    return proc, out


def macro_f1(y_true: list[int], y_pred: list[int], n_labels: int) -> float:
    """sklearn's f1_score(average='macro', labels=range(n), zero_division=0), in plain Python."""
    scores = []
    for c in range(n_labels):
        tp = sum(t == c and p == c for t, p in zip(y_true, y_pred, strict=True))
        fp = sum(t != c and p == c for t, p in zip(y_true, y_pred, strict=True))
        fn = sum(t == c and p != c for t, p in zip(y_true, y_pred, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(scores) / n_labels


def check_block(block: dict, labels: list[str], y_true: list[int], y_pred: list[int], correct: list[int]) -> None:
    n = len(y_true)
    assert set(block) >= {
        "model_dir",
        "macro_f1",
        "accuracy",
        "per_class",
        "confusion_matrix",
        "latency_ms",
        "eval_seconds",
    }
    assert set(block["per_class"]) == set(labels)
    for entry in block["per_class"].values():
        assert set(entry) == {"precision", "recall", "f1", "support"}
    assert [block["per_class"][name]["support"] for name in labels] == [y_true.count(i) for i in range(len(labels))]
    matrix = block["confusion_matrix"]
    assert len(matrix) == len(labels) and all(len(row) == len(labels) for row in matrix)
    assert sum(map(sum, matrix)) == n
    assert all(
        matrix[t][p] == sum(1 for a, b in zip(y_true, y_pred, strict=True) if (a, b) == (t, p))
        for t in range(len(labels))
        for p in range(len(labels))
    )
    assert correct == [int(t == p) for t, p in zip(y_true, y_pred, strict=True)]
    assert block["accuracy"] == pytest.approx(sum(correct) / n)
    assert block["macro_f1"] == pytest.approx(macro_f1(y_true, y_pred, len(labels)))
    latency = block["latency_ms"]
    assert latency["n"] == 20
    assert 0 < latency["p50"] <= latency["p99"]


def test_challenger_only_writes_complete_metrics_and_report(challenger_only, golden):
    proc, out = challenger_only
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "macro F1" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    manifest = json.loads((golden / "manifest.json").read_text())

    assert set(metrics) == {
        "golden_version",
        "golden_content_sha256",
        "n_examples",
        "task",
        "labels",
        "protocol",
        "challenger",
        "champion",
        "paired",
    }
    assert metrics["task"] == "text_classification"
    assert metrics["golden_version"] == "v1"
    assert metrics["golden_content_sha256"] == manifest["content_sha256"]
    assert metrics["n_examples"] == sum(map(len, TEXTS.values()))
    assert metrics["labels"] == LABELS
    assert metrics["protocol"]["batch_size"] == 1
    assert metrics["protocol"]["timer"] == "time.perf_counter"
    assert (metrics["protocol"]["warmup"], metrics["protocol"]["requests"], metrics["protocol"]["threads"]) == (
        2,
        20,
        1,
    )
    assert metrics["champion"] is None

    paired = metrics["paired"]
    assert paired["keys"] == sorted(paired["keys"])
    assert paired["champion_pred"] is None and paired["champion_correct"] is None
    assert paired["y_true"] == [LABELS.index(key.split("-", 1)[1]) for key in paired["keys"]]  # by name
    check_block(
        metrics["challenger"], LABELS, paired["y_true"], paired["challenger_pred"], paired["challenger_correct"]
    )
    assert metrics["challenger"]["per_class"]["refund_not_showing_up"]["support"] == 0

    report = (out / "report.html").read_text()
    assert report.count('<img alt="chart" src="data:image/png;base64,') >= 3
    assert "No champion" in report


def test_champion_run_scores_both_models_and_logs_to_mlflow(with_champion, models):
    proc, out = with_champion
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    paired = metrics["paired"]
    n = metrics["n_examples"]
    assert all(
        len(paired[k]) == n
        for k in ("keys", "y_true", "challenger_pred", "champion_pred", "challenger_correct", "champion_correct")
    )

    # The champion lists its labels in reverse order; predictions are mapped by name into `labels`.
    assert metrics["labels"] == LABELS
    champion = metrics["champion"]
    assert champion["version"] == "3"
    assert champion["model_dir"] == str(models["root"] / "champion")
    check_block(
        metrics["challenger"], LABELS, paired["y_true"], paired["challenger_pred"], paired["challenger_correct"]
    )
    check_block(champion, LABELS, paired["y_true"], paired["champion_pred"], paired["champion_correct"])
    assert "champion" in (out / "report.html").read_text()

    db = sqlite3.connect(models["tracking_uri"].removeprefix("sqlite:///"))
    logged = dict(db.execute("SELECT key, value FROM metrics WHERE run_uuid = ?", (models["run_id"],)).fetchall())
    assert logged["golden_macro_f1"] == pytest.approx(metrics["challenger"]["macro_f1"])
    assert logged["champion_golden_accuracy"] == pytest.approx(champion["accuracy"])
    assert {"latency_p50_ms", "latency_p99_ms", "champion_latency_p99_ms"} <= set(logged)
    artifacts = {p.name for p in (models["root"] / "mlartifacts").rglob("evaluation/*")}
    assert artifacts == {"metrics.json", "report.html"}


def test_tampered_golden_set_fails_before_scoring(golden, models, tmp_path):
    tampered = tmp_path / "golden"
    shutil.copytree(golden, tampered)
    with open(tampered / "golden.jsonl", "a") as handle:
        handle.write(json.dumps({"key": "zzz-99", "text": "sneaked in", "label": "card_arrival", "label_id": 0}) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("{}")  # a previous attempt's result must not survive

    proc = run_evaluate(out, tampered, models["root"])
    assert proc.returncode == os.EX_DATAERR
    assert "golden.jsonl" in proc.stderr
    assert "integrity" in proc.stderr
    assert not (out / "metrics.json").exists()
    assert not (out / "report.html").exists()


def test_weights_other_than_the_recorded_ones_are_refused(golden, models, tmp_path):
    """A model directory overwritten after training (or after approval) is never scored or served."""
    out = tmp_path / "out"
    proc = run_evaluate(out, golden, models["root"], "--challenger-digest", "0" * 64)
    assert proc.returncode == os.EX_DATAERR, proc.stderr[-2000:]
    assert "model integrity check failed" in proc.stderr and "is not the recorded 0000000000000000" in proc.stderr
    assert not (out / "metrics.json").exists()
