"""The gate verdict as HTML, put at the top of the evaluation report.

The report is built inside the evaluate job, before the gate has run; the gate runs
later in the Airflow worker, which has no matplotlib. So the report carries a marker with
a visible placeholder, and ``with_verdict(report_html, gate)`` swaps in the verdict table
once ``gate.json`` exists. Standard library only: both sides import this module.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

VERDICT_MARKER = "<!-- gate-verdict -->"
"""Where the verdict goes: right under the report's title. Kept in the output, so applying a verdict again
replaces it."""

_SECTION = '<section class="gate-verdict"'
VERDICT_PLACEHOLDER = (
    f'{VERDICT_MARKER}{_SECTION} style="margin:1em 0;padding:8px 12px;background:#f3f3f3;border-left:6px solid #999">'
    "<b>Gate verdict: not yet applied</b> — gate_on_metrics adds it</section>"
)
"""What ``build_report`` writes under the title; ``with_verdict`` replaces it."""

_BLOCK = re.compile(re.escape(VERDICT_MARKER) + r"\s*" + re.escape(_SECTION) + r"[^>]*>.*?</section>", re.DOTALL)

# (text colour, background) per verdict; 'report' is shown but never gates.
_COLOURS = {
    "pass": ("#137333", "#e6f4ea"),
    "fail": ("#b3261e", "#fce8e6"),
    "skipped": ("#5f6368", "#f1f3f4"),
    "report": ("#1a56a8", "#e8f0fe"),
}


def _number(value: Any) -> str:
    """Gate values and thresholds: None, numbers (inf = no limit) or text."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "no limit" if math.isinf(value) else f"{value:.4g}"
    return html.escape(str(value))


def verdict_table_html(gate: dict[str, Any]) -> str:
    """A PASS/REJECT banner (mode, failed criteria) and a table of every criterion with its verdict."""
    passed = gate["decision"] == "pass"
    colour, background = _COLOURS["pass" if passed else "fail"]
    failed = gate.get("failed") or []
    failed_text = "failed: " + ", ".join(html.escape(name) for name in failed) if failed else "no criterion failed"
    champion = f" · champion v{html.escape(str(gate['champion_version']))}" if gate.get("champion_version") else ""
    digest = f" · gate.json sha256 {html.escape(str(gate['digest'])[:12])}…" if gate.get("digest") else ""
    banner = (
        f'<div class="gate-decision" style="padding:8px 12px;background:{background};border-left:6px solid {colour}">'
        f'<span style="color:{colour};font-size:20px;font-weight:700">Gate: {"PASS" if passed else "REJECT"}</span> '
        f"— {html.escape(str(gate.get('mode', '')))}{champion}<br>"
        f'<span style="color:{colour if failed else "inherit"}">{failed_text}</span>'
        f'<span style="color:#666;font-size:13px">{digest}</span></div>'
    )
    rows = []
    for item in gate["criteria"]:
        verdict = str(item["verdict"])
        text, fill = _COLOURS.get(verdict, ("inherit", "transparent"))
        rows.append(
            f'<tr class="criterion"><td>{html.escape(str(item["name"]))}</td><td>{_number(item["value"])}</td>'
            f"<td>{_number(item['threshold'])}</td>"
            f'<td class="verdict-{html.escape(verdict)}" '
            f'style="color:{text};background:{fill};font-weight:600">{html.escape(verdict)}</td>'
            f'<td style="text-align:left">{html.escape(str(item["reason"]))}</td></tr>'
        )
    table = (
        '<table class="gate-criteria"><tr><th>criterion</th><th>value</th><th>threshold</th><th>verdict</th>'
        f"<th style='text-align:left'>reason</th></tr>{''.join(rows)}</table>"
    )
    return f"{_SECTION}><h2>Gate verdict</h2>{banner}{table}</section>"


def with_verdict(report_html: str, gate: dict[str, Any]) -> str:
    """The report with its placeholder (or an earlier verdict) replaced by this gate's verdict."""
    if not _BLOCK.search(report_html):
        raise ValueError(
            f"report has no gate-verdict placeholder ({VERDICT_MARKER} followed by a gate-verdict section): "
            "was it built by retrain_jobs.report.build_report?"
        )
    replacement = VERDICT_MARKER + verdict_table_html(gate)
    return _BLOCK.sub(lambda _: replacement, report_html, count=1)
