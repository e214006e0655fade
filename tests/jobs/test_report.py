"""include/retrain_jobs/report.py at scale, with the gate's verdict on top.

A seeded synthetic 150-class golden-set result (challenger and champion, paired arrays,
shaped like ``evaluate()``'s metrics.json) and a 5-class one without a champion are
rendered by ``build_report`` in the job environment (matplotlib lives only there), then
passed through ``retrain.verdict.with_verdict`` with the verdict of the real
``evaluate_gate`` under the default policy. Checked: the verdict table opens the report
and names every criterion; at 150 classes the per-class chart shows a captioned subset,
the full per-class table is collapsed in ``<details>``, and the confusion heat map gives
way to a top-confusions table; at 5 classes the heat map and the full chart remain.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import numpy as np
import pytest

from jobscripts import JOBSIDE  # tests/ is on pytest's pythonpath
from retrain.config import GatePolicy
from retrain.gate import evaluate_gate
from retrain.paths import INCLUDE_DIR, PROJECT_ROOT, job_python
from retrain.verdict import with_verdict

pytestmark = pytest.mark.skipif(not job_python().exists(), reason="job environment not installed")

# One label needs escaping everywhere it appears (tables, captions, the gate's reasons).
ODD_LABEL = "refund <pending> & reversed"


def scored(y: np.ndarray, pred: np.ndarray, labels: list[str], latencies: np.ndarray) -> dict:
    """One model's block as ``score_model`` writes it."""
    n = len(labels)
    matrix = np.zeros((n, n), dtype=int)
    np.add.at(matrix, (y, pred), 1)
    tp, support, predicted = np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros(n), where=support + predicted > 0)
    return {
        "macro_f1": float(f1.mean()),
        "accuracy": float(np.mean(y == pred)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(labels)
        },
        "confusion_matrix": matrix.tolist(),
        "latency_ms": {
            "p50": float(np.percentile(latencies, 50)),
            "p99": float(np.percentile(latencies, 99)),
            "mean": float(latencies.mean()),
            "n": len(latencies),
        },
        "eval_seconds": 1.0,
    }


def synthetic(n_classes: int, per_class: int, seed: int, champion: bool) -> dict:
    """metrics.json and raw latencies of a plausible run: class skills vary, errors favour a neighbour class."""
    rng = np.random.default_rng(seed)
    labels = [f"intent_{i:03d}" for i in range(n_classes)]
    labels[n_classes // 2] = ODD_LABEL
    y = np.repeat(np.arange(n_classes), per_class)

    def predict(skill: np.ndarray) -> np.ndarray:
        pred = y.copy()
        wrong = rng.random(len(y)) > skill[y]
        neighbour, anywhere = (y + 1) % n_classes, rng.integers(0, n_classes, len(y))
        pred[wrong] = np.where(rng.random(len(y)) < 0.6, neighbour, anywhere)[wrong]
        return pred

    champion_skill = rng.uniform(0.45, 0.98, n_classes)
    challenger_skill = np.clip(champion_skill + rng.normal(0.02, 0.1, n_classes), 0.2, 0.99)
    challenger_pred = predict(challenger_skill)
    champion_pred = predict(champion_skill) if champion else None
    latencies = {
        "challenger": rng.lognormal(np.log(8), 0.3, 200),
        "champion": rng.lognormal(np.log(9), 0.3, 200) if champion else None,
    }

    metrics = {
        "golden_version": "v7",
        "golden_content_sha256": "ab" * 32,
        "n_examples": len(y),
        "labels": labels,
        "protocol": {
            "batch_size": 1,
            "warmup": 20,
            "requests": 200,
            "threads": 1,
            "timer": "time.perf_counter",
            "scoring_batch_size": 64,
        },
        "challenger": {
            "model_dir": "/models/challenger",
            **scored(y, challenger_pred, labels, latencies["challenger"]),
        },
        "champion": {
            "model_dir": "/models/champion",
            "version": "3",
            **scored(y, champion_pred, labels, latencies["champion"]),
        }
        if champion
        else None,
        "paired": {
            "keys": [f"g{i:05d}" for i in range(len(y))],
            "y_true": y.tolist(),
            "challenger_pred": challenger_pred.tolist(),
            "champion_pred": champion_pred.tolist() if champion else None,
            "challenger_correct": (challenger_pred == y).astype(int).tolist(),
            "champion_correct": (champion_pred == y).astype(int).tolist() if champion else None,
        },
    }
    return {
        "metrics": metrics,
        "latencies": {role: v.tolist() if v is not None else None for role, v in latencies.items()},
    }


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, dict]:
    """Both cases rendered in one job-environment process, then given the real gate's verdict."""
    root = tmp_path_factory.mktemp("reports")
    cases = {"many": synthetic(150, 20, seed=11, champion=True), "few": synthetic(5, 30, seed=12, champion=False)}
    (root / "cases.json").write_text(json.dumps(cases))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = os.pathsep.join([str(INCLUDE_DIR), str(PROJECT_ROOT / "plugins")])
    proc = subprocess.run(
        [str(job_python()), str(JOBSIDE / "render_reports.py"), str(root / "cases.json"), str(root)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = {}
    for name, case in cases.items():
        raw = (root / f"{name}.html").read_text(encoding="utf-8")
        gate = evaluate_gate(GatePolicy(), case["metrics"])
        out[name] = {"raw": raw, "html": with_verdict(raw, gate), "gate": gate, "metrics": case["metrics"]}
    return out


def section(page: str, pattern: str) -> str:
    found = re.search(pattern, page, re.DOTALL)
    assert found, f"no match for {pattern!r}"
    return found.group(1)


@pytest.mark.parametrize("case", ["many", "few"])
def test_verdict_table_opens_the_report_and_names_every_criterion(reports, case):
    raw, page, gate = reports[case]["raw"], reports[case]["html"], reports[case]["gate"]
    assert "Gate verdict: not yet applied" in raw
    assert "not yet applied" not in page
    verdict = section(page, r'(<section class="gate-verdict">.*?</section>)')
    assert page.index(verdict) < page.index("<h2>Summary</h2>")
    assert page.index("<h1>") < page.index(verdict)
    assert f"Gate: {'PASS' if gate['decision'] == 'pass' else 'REJECT'}" in verdict
    assert verdict.count('<tr class="criterion">') == len(gate["criteria"])
    for item in gate["criteria"]:
        assert f"<td>{item['name']}</td>" in verdict
    assert ("significance.macro_f1" in verdict) == (case == "many")  # paired criteria need a champion


def test_many_classes_chart_a_captioned_subset(reports):
    page = reports["many"]["html"]
    figure = section(page, r'<figure class="per-class-chart">(.*?)</figure>')
    caption = section(figure, r"<figcaption>(.*?)</figcaption>")
    shown, total, worst, changed, both = map(int, re.search(
        r"Showing (\d+) of (\d+) classes: the (\d+) with the lowest challenger F1 and the (\d+) whose F1 changed "
        r"most against the champion \((\d+) in both\)", caption).groups())  # fmt: skip
    assert total == 150
    assert shown == worst + changed - both < 50
    assert worst >= 10 and changed >= 10
    assert "full per-class table" in caption
    assert figure.count("<img") == 1

    table = section(page, r"<details class='per-class-table'>(.*?)</details>")
    assert "all 150 classes" in table
    assert table.count("<tr>") == 1 + 150
    assert "champion F1" in table
    assert table.count("<details") == 0 and page.index("per-class-chart") < page.index("per-class-table")


def test_many_classes_list_top_confusions_instead_of_a_heat_map(reports):
    page, metrics = reports["many"]["html"], reports["many"]["metrics"]
    assert "confusion-heatmap" not in page
    assert page.count("<img") == 2  # per-class chart and latency, nothing else
    confusions = section(page, r"(<table class='top-confusions'>.*?</table>)")
    head, *rows = confusions.split("<tr>")[1:]
    assert "share of the true class" in head and "champion count" in head
    assert len(rows) == 25
    # The top row is the challenger's largest off-diagonal cell; the champion's count is of the same pair.
    challenger, champion = (
        np.array(metrics["challenger"]["confusion_matrix"]),
        np.array(metrics["champion"]["confusion_matrix"]),
    )
    np.fill_diagonal(challenger, 0)
    cells = re.findall(r"<td>(.*?)</td>", rows[0])
    i, j = metrics["labels"].index(cells[0]), metrics["labels"].index(cells[1])
    assert int(cells[2]) == challenger.max() == challenger[i, j]
    assert cells[3] == f"{challenger[i, j] / 20:.1%}"
    assert int(cells[4]) == champion[i, j]


def test_few_classes_keep_the_heat_map_and_the_full_chart(reports):
    page = reports["few"]["html"]
    assert '<figure class="confusion-heatmap"><img' in page
    assert "<table class='top-confusions'>" in page
    caption = section(page, r'<figure class="per-class-chart"><figcaption>(.*?)</figcaption>')
    assert caption.startswith("All 5 classes")
    assert section(page, r"<details class='per-class-table'>(.*?)</details>").count("<tr>") == 1 + 5
    assert "champion count" not in page and "No champion" in page


@pytest.mark.parametrize("case", ["many", "few"])
def test_label_names_are_escaped(reports, case):
    page = reports[case]["html"]
    assert "&lt;pending&gt; &amp; reversed" in page
    assert "<pending>" not in page
