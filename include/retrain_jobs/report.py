"""The evaluation report: one self-contained HTML page built from ``metrics.json``.

The skeleton is shared by every task type; each task adds its sections
(``retrain_jobs.tasks.<task>.evaluate.report_sections``) and its headline rows (``summary_rows``).

Charts are matplotlib (Agg, no display needed) PNGs embedded as base64, so the file can
be attached to an MLflow run or an alert and opened anywhere without its neighbours.

The gate runs after this job, so the page carries a placeholder under its title that
``retrain.verdict.with_verdict`` replaces with the verdict table.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import UTC, datetime

import matplotlib

matplotlib.use("Agg")  # headless: processing containers and Airflow workers have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from retrain.verdict import VERDICT_PLACEHOLDER  # noqa: E402

COLORS = {"challenger": "#1f77b4", "champion": "#ff7f0e"}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
.better { color: #137333; font-weight: 600; } .worse { color: #b3261e; font-weight: 600; }
.meta { color: #666; font-size: 13px; } img { max-width: 100%; }
figure { margin: 1em 0; } figcaption { color: #444; font-size: 14px; margin-bottom: .5em; }
details > summary { cursor: pointer; font-weight: 600; }
.top-confusions td:nth-child(2), .top-confusions th:nth-child(2) { text-align: left; }
"""


def img(fig) -> str:
    """Render a figure to an inline <img> and free it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="chart" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def delta_cell(challenger: float, champion: float | None, higher_is_better: bool, fmt: str) -> str:
    if champion is None:
        return "<td>–</td>"
    delta = challenger - champion
    good = delta > 0 if higher_is_better else delta < 0
    css = "" if delta == 0 else ("better" if good else "worse")
    return f'<td class="{css}">{delta:+{fmt}}</td>'


def against_baseline(
    metrics: dict, names: dict[str, str], baseline_name: str, per_query: str, note: str = ""
) -> list[str]:
    """Report sections of a task scored beside a baseline in the same run (metrics["baseline"]): each headline metric
    of the baseline, challenger and champion with the change against the baseline, and how many golden queries the
    challenger gains and loses against it on the per-query figure ``per_query`` (metrics["paired"])."""
    baseline, roles = metrics["baseline"], [r for r in ("challenger", "champion") if metrics[r]]
    head = "".join(f"<th>{r}</th><th>Δ vs {baseline_name}</th>" for r in roles)
    rows = []
    for m, name in names.items():
        cells = "".join(
            f"<td>{metrics[r][m]:.4f}</td>{delta_cell(metrics[r][m], baseline[m], True, '.4f')}" for r in roles
        )
        rows.append(f"<tr><td>{name}</td><td>{baseline[m]:.4f}</td>{cells}</tr>")
    a, base = np.array(metrics["paired"]["challenger"][per_query]), np.array(metrics["paired"]["baseline"][per_query])
    counts = (
        f"<p>Per query {names.get(per_query, per_query)}, challenger against the {baseline_name}: "
        f"{int(np.sum(a > base))} better, "
        f"{int(np.sum(a < base))} worse, {int(np.sum(a == base))} the same.</p>"
    )
    return [
        f"<h2>Against the {baseline_name}</h2>",
        *([f"<p>{html.escape(note)}</p>"] if note else []),
        f"<table><tr><th>metric</th><th>{baseline_name}</th>{head}</tr>{''.join(rows)}</table>",
        counts,
    ]


def _summary_table(metrics: dict, headline: list[tuple[str, str, bool, str]]) -> str:
    """The task's headline figures (block key, name, higher is better, format), then latency, with Δ against the
    champion."""
    challenger, champion = metrics["challenger"], metrics["champion"]
    rows = [
        *((name, lambda b, key=key: b[key], higher, fmt) for key, name, higher, fmt in headline),
        ("latency p50 (ms)", lambda b: b["latency_ms"]["p50"], False, ".2f"),
        ("latency p99 (ms)", lambda b: b["latency_ms"]["p99"], False, ".2f"),
        ("latency mean (ms)", lambda b: b["latency_ms"]["mean"], False, ".2f"),
    ]
    version = f" (v{html.escape(str(champion.get('version')))})" if champion and champion.get("version") else ""
    out = [
        f"<table><tr><th>metric</th><th>challenger</th><th>champion{version}</th><th>Δ challenger − champion</th></tr>"
    ]
    for name, get, higher, fmt in rows:
        champ = get(champion) if champion else None
        champ_cell = f"{champ:{fmt}}" if champ is not None else "–"
        out.append(
            f"<tr><td>{name}</td><td>{get(challenger):{fmt}}</td><td>{champ_cell}</td>"
            f"{delta_cell(get(challenger), champ, higher, fmt)}</tr>"
        )
    return "\n".join(out) + "</table>"


def _latency_chart(latencies: dict[str, list[float] | None]) -> str:
    present = {role: np.array(v) for role, v in latencies.items() if v}
    combined = np.concatenate(list(present.values()))
    bins = np.linspace(combined.min(), np.percentile(combined, 99.5) * 1.05, 40)
    fig, ax = plt.subplots(figsize=(9, 4))
    for role, values in present.items():
        ax.hist(np.clip(values, None, bins[-1]), bins=bins, alpha=0.55, color=COLORS[role], label=role)
        for q, style in ((50, "-"), (99, "--")):
            ax.axvline(np.percentile(values, q), color=COLORS[role], linestyle=style, linewidth=1)
    ax.set_xlabel("latency per request (ms); solid line p50, dashed p99; tail clipped into the last bin")
    ax.set_ylabel("requests")
    ax.legend()
    return img(fig)


def build_report(metrics: dict, latencies: dict[str, list[float] | None]) -> str:
    """The whole page; ``latencies`` holds the raw per-request samples ({role: [ms, ...]}).

    The skeleton (title, verdict placeholder, golden set and protocol, summary table, latency)
    is the same for every task type; ``retrain_jobs.tasks.<task>.evaluate.report_sections`` adds the task's own."""
    from retrain.tasks import task_module  # the task's sections import this module's helpers

    task = task_module("evaluate", metrics.get("task", "text_classification"))
    protocol = metrics["protocol"]
    champion = metrics["champion"]
    champion_note = (
        "" if champion else "<p><b>No champion</b>: first model of this lineage, only absolute criteria apply.</p>"
    )
    meta = (
        f"golden set <b>{html.escape(str(metrics['golden_version']))}</b> "
        f"(sha256 {metrics['golden_content_sha256'][:12]}…), {metrics['n_examples']} examples, "
        f"{task.describe(metrics)} · latency: batch size 1, {protocol['warmup']} warm-up + "
        f"{protocol['requests']} timed requests, {protocol['threads']} thread(s) · generated "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    sections = [
        "<h1>Evaluation report</h1>",
        VERDICT_PLACEHOLDER,
        f"<p class='meta'>{meta}</p>",
        champion_note,
        "<h2>Summary</h2>",
        _summary_table(metrics, task.summary_rows(metrics)),
        *task.report_sections(metrics),
        "<h2>Latency</h2>",
        _latency_chart(latencies),
    ]
    body = "\n".join(s for s in sections if s)
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>Evaluation report</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>\n"
    )
