"""The causal_lm_lora task type on tiny data: training (train.py as SageMaker runs it) on a config-built 2-layer Llama
with SmolLM2's tokenizer, the format metrics by hand, evaluation end to end, serving's checks, bad input named by
file, row and rule, and the GPU-only options refused on CPU before any work.

Tiny data: 48 training and 16 validation rows of data/llm (UCI sentences, CC BY 4.0, see its SOURCE.md).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from datetime import UTC
from itertools import pairwise
from pathlib import Path

import pytest

from jobscripts import JOBSIDE  # tests/ is on pytest's pythonpath
from retrain.paths import INCLUDE_DIR, PROJECT_ROOT, job_python
from retrain.runner import LocalJob, command_line, job_environment
from retrain.store import LocalStore, write_manifest_and_publish
from trainspec import kill_and_resume, run_job, train_job, training_spec  # tests/ is on pytest's pythonpath

pytestmark = pytest.mark.skipif(not job_python().exists(), reason=f"job environment missing at {job_python()}")

DATA = PROJECT_ROOT / "data" / "llm"


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def job_env() -> dict:
    return job_environment(training_spec({"train": Path("."), "validation": Path(".")}, Path("/tmp"), {}, {}))


def python(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """tests/jobside/``script`` run by the job interpreter, in the job environment."""
    return subprocess.run(
        [str(job_python()), str(JOBSIDE / script), *args],
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    done = python("tiny_llama.py", str(path))  # a config-built 2-layer Llama with SmolLM2's tokenizer
    assert done.returncode == 0, done.stderr[-3000:]
    return path


@pytest.fixture(scope="module")
def channels(tmp_path_factory) -> dict[str, Path]:
    """train/ and validation/ channels as build_dataset writes them: rows {key, text: prompt, label: response,
    label_id}."""
    root = tmp_path_factory.mktemp("llm")
    responses = json.loads((DATA / "responses.json").read_text())
    with open(DATA / "train.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    picked = [r for r in rows if len(r["prompt"]) < 80][::25][:64]  # spread over sources and sentiments, short prompts
    for split, part in (("train", picked[:48]), ("validation", picked[48:])):
        (root / split).mkdir()
        (root / split / f"{split}.jsonl").write_text(
            jsonl(
                {
                    "key": f"{split}-{i:03d}",
                    "text": r["prompt"],
                    "label": r["response"],
                    "label_id": responses.index(r["response"]),
                }
                for i, r in enumerate(part)
            )
        )
    return {"train": root / "train", "validation": root / "validation", "root": root}


def spec_for(channels, base_dir: Path, out: Path, **overrides) -> LocalJob:
    return training_spec(
        channels,
        out,
        {
            "task": "causal_lm_lora",
            "base-model": str(base_dir),
            "dataset-version": "ds-tiny",
            "labels-file": str(DATA / "responses.json"),
            "epochs": "6",
            "batch-size": "8",
            "learning-rate": "0.01",
            "lora-r": "4",
            "lora-alpha": "8",
            "warmup-ratio": "0.1",
            "max-prompt-tokens": "48",
            "max-new-tokens": "12",
            "threads": "2",
            "seed": "7",
        },
        overrides,
    )


run, train = run_job, train_job


@pytest.fixture(scope="module")
def first_run(channels, base_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run-a")
    return train(spec_for(channels, base_dir, out)), out


def test_loss_falls_and_the_model_dir_holds_the_adapter_only(first_run, base_dir):
    summary, out = first_run
    losses = [epoch["train_loss"] for epoch in summary["history"]]
    # a random 2-layer model learns slowly, but every epoch's loss is below the one before, 0.3 nats lower in all
    assert all(later < earlier for earlier, later in pairwise(losses)) and losses[-1] < losses[0] - 0.3, losses
    assert summary["history"][-1]["val_loss"] < summary["history"][0]["val_loss"]
    assert summary["task"] == "causal_lm_lora" and summary["n_train"] == 48 and summary["n_validation"] == 16
    model = out / "model"
    files = sorted(str(p.relative_to(model)) for p in model.rglob("*") if p.is_file())
    assert (
        "adapter/adapter_model.safetensors" in files
        and "adapter/adapter_config.json" in files
        and "lm_spec.json" in files
    )
    weights = [f for f in files if f.endswith((".safetensors", ".bin", ".pt"))]
    assert weights == ["adapter/adapter_model.safetensors"], files  # no base (or merged) weights are stored
    check = python("safetensors_keys.py", str(model / "adapter" / "adapter_model.safetensors"))
    keys = json.loads(check.stdout.strip().splitlines()[-1])
    assert keys and all("lora_A" in k or "lora_B" in k for k in keys), keys
    assert len(keys) == 2 * 4 * 2  # A and B of q/k/v/o in 2 layers
    # The base model's digest is recorded in the model dir's spec and the training summary, and it is the base's.
    digest = python("tensor_file_digest.py", str(base_dir))
    base_digest = digest.stdout.strip().splitlines()[-1]
    assert (
        json.loads((model / "lm_spec.json").read_text())["base_model_digest"]
        == base_digest
        == summary["base_model_digest"]
    )


def test_same_inputs_give_the_same_weights_digest(first_run, channels, base_dir, tmp_path):
    summary, _ = first_run
    assert train(spec_for(channels, base_dir, tmp_path / "again"))["weights_digest"] == summary["weights_digest"]
    assert (
        train(spec_for(channels, base_dir, tmp_path / "seed8", seed=8))["weights_digest"] != summary["weights_digest"]
    )


def test_killed_job_resumes_to_the_same_weights(first_run, channels, base_dir, tmp_path):
    uninterrupted, _ = first_run
    spec = spec_for(channels, base_dir, tmp_path / "killed")
    summary = kill_and_resume(spec, 2)
    assert [h["epoch"] for h in summary["history"]] == list(range(1, 7))
    assert summary["weights_digest"] == uninterrupted["weights_digest"]


def test_an_empty_response_names_file_row_and_rule(channels, base_dir, tmp_path):
    bad = tmp_path / "bad-train"
    bad.mkdir()
    lines = (channels["train"] / "train.jsonl").read_text().splitlines()
    lines[2] = json.dumps({"key": "x", "text": "The battery died after a week.", "label": "", "label_id": 0})
    (bad / "train.jsonl").write_text("\n".join(lines) + "\n")
    spec = spec_for(channels, base_dir, tmp_path / "out")
    proc = run(spec, {"SM_CHANNEL_TRAIN": str(bad)})
    assert proc.returncode == os.EX_DATAERR, proc.stderr[-2000:]
    assert (
        f"{bad / 'train.jsonl'}: line 3: empty response ('label'); rule: a prompt/response row has a non-empty prompt "
        "and response" in proc.stderr
    )
    assert not any(spec.model_dir.iterdir()) and not any(spec.checkpoint_dir.iterdir())  # nothing written


def test_validate_raw_refuses_a_row_with_an_empty_response(tmp_path):
    """llm_lora's raw contract as shipped: prompt,response with every valid response as the labels file."""
    from datetime import datetime

    from retrain.config import load_model
    from retrain.snapshot import snapshot_raw

    data = load_model("llm_lora").data
    part = "raw/llm_lora/dt=2026-01-01/part-00000.csv"
    path = tmp_path / "store" / part
    path.parent.mkdir(parents=True)
    good = '"{""sentiment"": ""negative"", ""source"": ""amazon""}"'
    path.write_text(
        f"{data.text_column},{data.label_column}\nThe battery died after a week.,{good}\nWorst film of the year.,\n"
        f'Great tacos.,"{{""sentiment"": ""positive"", ""source"": ""yelp""}}"\n',
        encoding="utf-8",
    )
    manifest = snapshot_raw(
        LocalStore(tmp_path / "store"),
        "llm_lora",
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 4, 1, tzinfo=UTC),
    )
    (tmp_path / "raw_manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"
    spec = LocalJob(
        name="validate_raw",
        kind="processing",
        script=INCLUDE_DIR / "validation" / "validate_raw.py",
        arguments={
            "raw-manifest": str(tmp_path / "raw_manifest.json"),
            "store-root": str(tmp_path / "store"),
            "text-column": data.text_column,
            "label-column": data.label_column,
            "labels-file": str(PROJECT_ROOT / data.labels_file),
            "min-rows": "2",
            "min-text-chars": "2",
            "max-text-chars": "512",
            "output-dir": str(out),
        },
        output_dir=out,
        result_file=out / "result.json",
    )
    proc = subprocess.run(command_line(spec), env=job_environment(spec), capture_output=True, text=True, timeout=300)
    assert proc.returncode == os.EX_DATAERR, proc.stdout + proc.stderr
    assert f"{part}: line 3: response is present (not null/empty) (value: None)" in proc.stdout.splitlines()


# tests/jobside/format_fixture.py: six generations against the reference {"sentiment": "negative", "source": "imdb"}
# (schema: sentiment in {negative, positive}, source in {amazon, imdb, yelp}):
#   '{"sentiment": "negative", "source": "imdb"}'      valid, exact match
#   ' {"source": "imdb", "sentiment": "negative"} '   valid (key order and outer spaces do not matter), exact match
#   '{"sentiment": "positive", "source": "imdb"}'      valid, no match (sentiment differs)
#   '{"sentiment": "negative", "source": "netflix"}'   invalid: source is not an allowed value
#   '{"sentiment": "negative"}'                        invalid: a field is missing
#   'Sentiment: negative'                              invalid: not JSON
# -> format_valid 3/6, exact match 2/6.
def test_format_metrics_by_hand():
    done = subprocess.run(
        [str(job_python()), str(JOBSIDE / "format_fixture.py")],
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["valid"] == [True, True, True, False, False, False]
    assert got["match"] == [True, True, False, False, False, False]


@pytest.fixture(scope="module")
def golden(channels, tmp_path_factory) -> Path:
    """The validation rows as a golden set, published through the store."""
    rows = [json.loads(line) for line in (channels["validation"] / "validation.jsonl").read_text().splitlines()]
    store = LocalStore(tmp_path_factory.mktemp("store"))
    staging = store.staging_dir("golden/llm_lora/v1")
    (staging / "golden.jsonl").write_text(jsonl(rows))
    write_manifest_and_publish(store, staging, "golden/llm_lora/v1", {"golden_version": "v1", "model": "llm_lora"})
    return store.path("golden/llm_lora/v1")


def test_evaluation_scores_adapter_champion_and_base_baseline(first_run, channels, base_dir, golden, tmp_path):
    """A fresh adapter (0 epochs: LoRA's B starts at zero) is the base model, so it must score exactly the baseline."""
    summary, out = first_run
    fresh = train(spec_for(channels, base_dir, tmp_path / "fresh", epochs=0))
    cmd = [
        str(job_python()),
        str(INCLUDE_DIR / "retrain_jobs" / "evaluate.py"),
        "--task",
        "causal_lm_lora",
        "--challenger-dir",
        str(out / "model"),
        "--champion-dir",
        str(tmp_path / "fresh" / "model"),
        "--champion-version",
        "1",
        "--challenger-digest",
        summary["weights_digest"],
        "--champion-digest",
        fresh["weights_digest"],
        "--golden-dir",
        str(golden),
        "--output-dir",
        str(tmp_path / "eval"),
        "--batch-size",
        "8",
        "--latency-requests",
        "10",
        "--latency-warmup",
        "1",
    ]
    proc = subprocess.run(cmd, env=job_env(), capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["task"] == "causal_lm_lora" and metrics["n_examples"] == 16
    baseline, champion, challenger = metrics["baseline"], metrics["champion"], metrics["challenger"]
    for key in ("format_exact_match", "format_valid", "eval_loss", "text_perplexity"):
        assert champion[key] == pytest.approx(baseline[key], rel=1e-6), key
    assert metrics["paired"]["champion"] == metrics["paired"]["baseline"]
    assert challenger["format_exact_match"] == pytest.approx(sum(metrics["paired"]["challenger"]) / 16)
    assert challenger["eval_loss"] < baseline["eval_loss"]  # the adapter learned the responses
    assert "Against the base model" in (tmp_path / "eval" / "report.html").read_text()


def test_serving_loads_base_and_adapter_and_checks_digests(first_run, base_dir, tmp_path):
    import shutil

    summary, out = first_run
    done = python("serve_lora.py", str(out / "model"), summary["weights_digest"])
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(got["answers"]) == 2 and all(isinstance(a, str) for a in got["answers"]) and got["refused"]
    # A model dir whose recorded base digest is not the base's is refused before the adapter is applied.
    moved = tmp_path / "model"
    shutil.copytree(out / "model", moved)
    spec = json.loads((moved / "lm_spec.json").read_text())
    (moved / "lm_spec.json").write_text(json.dumps({**spec, "base_model_digest": "f" * 64}))
    done = python("serve_lora.py", str(moved), summary["weights_digest"])
    assert done.returncode != 0 and "base model weights digest" in done.stderr and "f" * 64 in done.stderr


def test_gpu_only_options_are_refused_on_cpu_before_any_work(channels, base_dir, tmp_path):
    spec = spec_for(channels, base_dir, tmp_path / "out")
    for d in (spec.model_dir, spec.checkpoint_dir):
        d.mkdir(parents=True, exist_ok=True)
    argv = command_line(spec)[2:]  # train.py's own arguments
    done = subprocess.run(
        [str(job_python()), str(JOBSIDE / "gpu_refusals.py"), *argv],
        env=job_environment(spec),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["bf16"] == "Refused: precision bf16 needs a CUDA GPU: on CPU training runs in fp32 (precision: fp32)"
    assert got["fp16"] == "Refused: precision fp16 needs a CUDA GPU: on CPU training runs in fp32 (precision: fp32)"
    assert got["nf4"].startswith("Refused: quantization nf4 (QLoRA) needs a CUDA GPU")
    assert got["3"].startswith("Refused: deepspeed_stage 3 (ZeRO-3) needs CUDA GPUs")
    assert not any(spec.model_dir.iterdir()) and not any(
        spec.checkpoint_dir.iterdir()
    )  # nothing written, not even the ZeRO-3 JSON
    # As a job: exit 65 (not retried), the reason on stderr.
    proc = run(spec_for(channels, base_dir, tmp_path / "job", precision="bf16"))
    assert proc.returncode == os.EX_DATAERR and "precision bf16 needs a CUDA GPU" in proc.stderr, proc.stderr[-2000:]
