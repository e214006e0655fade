"""retrain.verdict: the gate's verdict as HTML, swapped into the report's placeholder.

Checked on hand-written gate dicts: every field is HTML-escaped, verdicts are coloured by
class, infinite thresholds read as "no limit", a report without the marker is refused
with a clear error, applying a verdict twice replaces the first, and the module imports
nothing beyond the standard library (the job and the Airflow worker both import it).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from retrain.paths import PROJECT_ROOT
from retrain.verdict import VERDICT_MARKER, VERDICT_PLACEHOLDER, verdict_table_html, with_verdict

REPORT = (
    f"<html><body><h1>Evaluation report</h1>{VERDICT_PLACEHOLDER}<p class='meta'>golden v1</p>"
    "<h2>Summary</h2></body></html>"
)


def gate(decision: str = "pass", **criterion) -> dict:
    item = {
        "name": "floor.macro_f1",
        "value": 0.8123456,
        "threshold": 0.7,
        "verdict": "pass",
        "reason": "challenger macro_f1 0.8123 >= 0.7",
    }
    item.update(criterion)
    return {
        "decision": decision,
        "failed": [item["name"]] if item["verdict"] == "fail" else [],
        "mode": "full policy against the champion",
        "champion_version": "3",
        "criteria": [
            item,
            {
                "name": "latency.p99_ms",
                "value": 12.5,
                "threshold": float("inf"),
                "verdict": "pass",
                "reason": "p99 latency (ms) 12.50 <= inf",
            },
            {
                "name": "significance.mcnemar",
                "value": 0.04,
                "threshold": None,
                "verdict": "report",
                "reason": "reported, not gating",
            },
        ],
        "digest": "0123456789abcdef" * 4,
    }


def test_every_field_is_escaped():
    body = verdict_table_html(gate(
        "reject",
        name="per_class.<b>floor</b>",
        verdict="fail",
        value="<x>",
        reason='worst "a&b" <script>alert(1)</script>',
    ) | {"mode": "mode <i>", "champion_version": "<3>"})  # fmt: skip
    for raw in ("<b>floor</b>", "<script>", "<x>", "<i>", "<3>"):
        assert raw not in body
    assert "per_class.&lt;b&gt;floor&lt;/b&gt;" in body
    assert "worst &quot;a&amp;b&quot; &lt;script&gt;" in body
    assert "failed: per_class.&lt;b&gt;floor&lt;/b&gt;" in body


def test_banner_and_cells_show_the_decision():
    passed = verdict_table_html(gate())
    assert "Gate: PASS" in passed and "no criterion failed" in passed
    assert "full policy against the champion" in passed and "champion v3" in passed
    assert "gate.json sha256 0123456789ab…" in passed
    assert passed.count('<tr class="criterion">') == 3
    assert '<td class="verdict-pass"' in passed and '<td class="verdict-report"' in passed
    assert "<td>0.8123</td><td>0.7</td>" in passed
    assert "<td>12.5</td><td>no limit</td>" in passed
    assert "<td>0.04</td><td>–</td>" in passed

    rejected = verdict_table_html(gate("reject", verdict="fail"))
    assert "Gate: REJECT" in rejected and "failed: floor.macro_f1" in rejected
    assert '<td class="verdict-fail" style="color:#b3261e' in rejected


def test_with_verdict_replaces_the_placeholder_under_the_title():
    page = with_verdict(REPORT, gate())
    assert "not yet applied" not in page
    assert page.index("<h1>") < page.index("Gate: PASS") < page.index("golden v1") < page.index("<h2>Summary</h2>")
    assert page.count(VERDICT_MARKER) == 1


def test_applying_a_verdict_again_replaces_the_first():
    page = with_verdict(with_verdict(REPORT, gate()), gate("reject", verdict="fail"))
    assert page.count('class="gate-verdict"') == 1
    assert "Gate: REJECT" in page and "Gate: PASS" not in page


def test_report_without_marker_is_refused():
    with pytest.raises(ValueError, match="no gate-verdict placeholder"):
        with_verdict("<html><body><h1>Evaluation report</h1></body></html>", gate())
    with pytest.raises(ValueError, match="build_report"):
        with_verdict(REPORT.replace(VERDICT_MARKER, ""), gate())


def test_imports_only_the_standard_library():
    code = (
        "import sys, retrain.verdict; print(sorted({'numpy', 'matplotlib', 'airflow', 'pydantic'} & set(sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "plugins")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
