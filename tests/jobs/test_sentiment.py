"""The sentiment model's own checks: its escalation metric by hand, and a label outside its schema.

The metric runs where evaluation runs it (the job environment), on a fixture small enough to
check by reading it. The bad label goes through validate_raw and build_dataset as the DAG's
tasks run them (specs from config/models/sentiment.yaml, the local runner), and each names the
file, the row and the rule, with no dataset version written.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime

import pytest

from jobscripts import JOBSIDE  # tests/ is on pytest's pythonpath
from retrain.config import load_model
from retrain.jobs import RunContext, job_spec
from retrain.paths import job_python
from retrain.runner import JobFailed, LocalJob, job_environment, local_job, run_job
from retrain.snapshot import snapshot_raw
from retrain.store import LocalStore
from retrain_tools.seed import publish_golden

pytestmark = pytest.mark.skipif(not job_python().exists(), reason=f"job environment missing at {job_python()}")


# tests/jobside/escalation_fixture.py: six golden examples, escalation label "negative" (index 0 in labels.json):
#   true:       negative negative positive positive positive positive
#   challenger: negative positive negative positive positive negative   -> 2 of the 4 positives escalated: 0.5
#   champion:   negative negative positive positive positive negative   -> 1 of 4: 0.25
# Challenger F1: negative has TP 1, FP 2, FN 1 -> 2/(2+2+1) = 0.4; positive TP 2, FP 1, FN 2 -> 4/7.
def test_false_escalation_rate_by_hand():
    env = job_environment(LocalJob("x", "processing", job_python(), {}, job_python()))
    done = subprocess.run(
        [str(job_python()), str(JOBSIDE / "escalation_fixture.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    blocks = json.loads(done.stdout.strip().splitlines()[-1])
    assert blocks["challenger"]["false_escalation"] == {
        "rate": 0.5,
        "false_escalations": 2,
        "non_escalation_examples": 4,
    }
    assert blocks["champion"]["false_escalation_rate"] == 0.25
    assert blocks["challenger"]["per_class"]["negative"]["f1"] == pytest.approx(0.4)
    assert blocks["challenger"]["macro_f1"] == pytest.approx((0.4 + 4 / 7) / 2)


@pytest.fixture(scope="module")
def bad_label_run(tmp_path_factory):
    """One Tuesday partition of sentiment rows, its third data row labelled 'neutral'."""
    config = load_model("sentiment")
    store = LocalStore(tmp_path_factory.mktemp("store"))
    publish_golden(store, config, config.sample_data.path("golden"), config.data.golden_version)
    rows = [
        "text,sentiment",
        '"Great phone, works well.",positive',
        "Battery died in a day.,negative",
        "It arrived on Tuesday.,neutral",
        "Would buy again.,positive",
    ] + [f"Solid product number {i}.,positive" for i in range(20)]
    key = "raw/sentiment/dt=2026-11-10/part-00000.csv"
    store.path(key).parent.mkdir(parents=True)
    store.path(key).write_text("\n".join(rows) + "\n")
    start, end = datetime(2026, 11, 10, tzinfo=UTC), datetime(2026, 11, 17, tzinfo=UTC)
    manifest_path = store.write_json(
        "runs/sentiment/manual/raw_manifest.json", snapshot_raw(store, config.name, start, end)
    )
    ctx = RunContext(
        dag_id="retrain_sentiment",
        run_id="manual",
        interval_start=start,
        interval_end=end,
        upstream={"snapshot_raw": {"manifest_path": str(manifest_path)}},
    )
    errors = {}
    for job in ("validate_raw", "build_dataset"):
        with pytest.raises(JobFailed) as info:
            run_job(local_job(job_spec(job, config, ctx, store), store))
        errors[job] = info.value
    return store, store.path(key), errors


@pytest.mark.parametrize(
    ("job", "where", "rule"),
    [
        ("validate_raw", "line 4", "sentiment in the allowed labels (labels.json)"),
        ("build_dataset", "row 3", "rule: label must be one of the 2 allowed labels in /"),
    ],
)
def test_a_label_outside_the_schema_names_file_row_and_rule(bad_label_run, job, where, rule):
    store, path, errors = bad_label_run
    message = str(errors[job])
    assert errors[job].bad_input  # EX_DATAERR: never retried
    assert f"{path}" in message or "raw/sentiment/dt=2026-11-10/part-00000.csv" in message
    assert where in message and "neutral" in message and rule in message and "labels.json" in message
    assert not store.path("datasets/sentiment").exists()  # nothing written
