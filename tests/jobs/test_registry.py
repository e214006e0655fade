"""The registry job on a real MLflow (SQLite): register, load back, reject, promote, roll back."""

from __future__ import annotations

import json
import subprocess

import pytest

from jobscripts import JOBSIDE  # tests/ is on pytest's pythonpath
from retrain.paths import PROJECT_ROOT, job_python
from trainspec import registry_env  # tests/ is on pytest's pythonpath

REGISTRY = PROJECT_ROOT / "plugins" / "retrain" / "registry.py"


@pytest.fixture(scope="module")
def world(channels, tmp_path_factory, training):
    """Two models trained on tiny data, each with its MLflow run, and an empty store."""
    spec_for, train = training
    root = tmp_path_factory.mktemp("registry")
    env = registry_env(root)
    models = [train(spec_for(channels, root / f"m{seed}", seed=seed, epochs=3), env) for seed in (7, 8, 9)]
    return {"env": env, "models": models, "root": root}


def registry(world, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(job_python()), str(REGISTRY), *args], env=world["env"], capture_output=True, text=True, timeout=300
    )


def ok(world, *args: str) -> dict:
    proc = registry(world, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("{") :])


def register(world, index: int, name: str = "intent") -> int:
    model = world["models"][index]
    tags = {
        "dataset_version": "ds-tiny",
        "git_sha": "abc",
        "airflow_run_id": f"run-{index}",
        "weights_digest": model["weights_digest"],
    }
    result = ok(
        world,
        "register",
        "--model",
        name,
        "--model-dir",
        model["model_dir"],
        "--run-id",
        model["mlflow_run_id"],
        "--tags-json",
        json.dumps(tags),
        "--evidence-json",
        json.dumps({"summary": f"{model['model_dir']}/training_summary.json"}),
    )
    return result["version"]


def status(world, name: str = "intent") -> dict:
    return ok(world, "status", "--model", name)


def test_lifecycle(world):
    v1 = register(world, 0)
    registered = status(world)  # each status is a registry subprocess: read once, check every field
    assert registered["challenger"] == v1 and registered["champion"] is None

    # a registered version loads back through MLflow and predicts label names
    proc = subprocess.run(
        [str(job_python()), str(JOBSIDE / "predict_registered.py"), "models:/intent@challenger"],
        env=world["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    predicted = eval(proc.stdout.strip().splitlines()[-1])  # noqa: S307 - our own printed list
    assert len(predicted) == 2 and set(predicted) <= {
        "card_arrival",
        "exchange_rate",
        "lost_or_stolen_card",
        "top_up_failed",
        "pin_blocked",
    }

    promoted = ok(
        world,
        "promote",
        "--model",
        "intent",
        "--version",
        str(v1),
        "--actor",
        "alice",
        "--reason",
        "first model",
        "--gated-champion",
        "",
    )
    assert promoted["ledger_entry"]["actor"] == "alice"
    serving = status(world)
    assert (serving["champion"], serving["challenger"]) == (v1, None)

    v2 = register(world, 1)
    ok(
        world,
        "reject",
        "--model",
        "intent",
        "--version",
        str(v2),
        "--actor",
        "alice",
        "--reason",
        "worse on card intents",
    )
    after = status(world)
    assert (after["champion"], after["challenger"]) == (v1, None)
    assert {v["version"]: v["approval"] for v in after["versions"]} == {v1: "approved", v2: "rejected"}

    v3 = register(world, 2)
    ok(
        world,
        "promote",
        "--model",
        "intent",
        "--version",
        str(v3),
        "--actor",
        "carol",
        "--reason",
        "better",
        "--gated-champion",
        str(v1),
    )
    ledger_before = (world["root"] / "store" / "ledger" / "intent.jsonl").read_text()

    for target, message in (
        (str(v2), "was never champion"),
        ("99", "was never champion"),
        (str(v3), "already the champion"),
    ):
        proc = registry(
            world, "rollback", "--model", "intent", "--target-version", target, "--actor", "bob", "--reason", "test"
        )
        assert proc.returncode == 65 and message in proc.stderr, proc.stderr
    assert status(world)["champion"] == v3
    assert (world["root"] / "store" / "ledger" / "intent.jsonl").read_text() == ledger_before  # nothing changed

    rolled = ok(world, "rollback", "--model", "intent", "--actor", "bob", "--reason", "regression in production")
    assert (rolled["champion"], rolled["previous"]) == (v1, v3)
    final = status(world)
    assert final["champion"] == v1 and final["ledger_verified"] is True
    assert [(e["action"], e["to_version"], e["actor"]) for e in final["ledger"]] == [
        ("promote", v1, "alice"),
        ("promote", v3, "carol"),
        ("rollback", v1, "bob"),
    ]


def test_two_runs_gated_without_a_champion_cannot_both_be_promoted(world, tmp_path):
    """The race: overlapping runs are both gated with no champion; the first is promoted, then the
    second is approved too. Its gate never saw the serving champion, so promotion refuses."""
    race = {
        **world,
        "env": {**world["env"], "RETRAIN_HOME": str(tmp_path / "store")},
    }  # its own ledger, its own registered model
    first, second = register(race, 0, "race"), register(race, 1, "race")
    ok(
        race,
        "promote",
        "--model",
        "race",
        "--version",
        str(first),
        "--actor",
        "alice",
        "--reason",
        "run A",
        "--gated-champion",
        "",
    )
    ledger_before = (tmp_path / "store" / "ledger" / "race.jsonl").read_text()
    proc = registry(
        race,
        "promote",
        "--model",
        "race",
        "--version",
        str(second),
        "--actor",
        "alice",
        "--reason",
        "run B",
        "--gated-champion",
        "",
    )
    assert proc.returncode == 65, proc.stderr
    assert f"v{second} was gated against no champion, but the champion is now v{first}" in proc.stderr
    assert "Clear evaluate_model" in proc.stderr
    assert (
        status(race, "race")["champion"] == first
        and (tmp_path / "store" / "ledger" / "race.jsonl").read_text() == ledger_before
    )


def test_weights_changed_after_registration_are_neither_rolled_back_to_nor_served(world):
    """Runs after test_lifecycle: v1 serves, v3 served before. v3's directory is then overwritten."""
    v3_dir = world["models"][2]["model_dir"]
    proc = subprocess.run(
        [str(job_python()), str(JOBSIDE / "tamper_weights.py"), v3_dir],
        env=world["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    ledger_before = (world["root"] / "store" / "ledger" / "intent.jsonl").read_text()
    refused = registry(
        world, "rollback", "--model", "intent", "--target-version", "3", "--actor", "bob", "--reason", "test"
    )
    assert refused.returncode == 65 and "is not the recorded" in refused.stderr, refused.stderr
    assert status(world)["champion"] == 1
    assert (world["root"] / "store" / "ledger" / "intent.jsonl").read_text() == ledger_before

    # Serving: the registered copy in MLflow is intact and loads; a copy with other weights does not.
    intact = subprocess.run(
        [str(job_python()), str(JOBSIDE / "load_registered.py"), "models:/intent/3"],
        env=world["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert intact.returncode == 0 and "loaded" in intact.stdout, intact.stderr[-2000:]
    proc = subprocess.run(
        [str(job_python()), str(JOBSIDE / "load_model_dir.py"), v3_dir, world["models"][2]["weights_digest"]],
        env=world["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "WeightsMismatch" in proc.stderr and "refusing to load" in proc.stderr
