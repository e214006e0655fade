"""The evaluation report: one self-contained HTML page built from ``metrics.json``.

Charts are matplotlib (Agg, no display needed) PNGs embedded as base64, so the file can
be attached to an MLflow run or an alert and opened anywhere without its neighbours.

The gate runs after this job, so the page carries a placeholder under its title that
``retrain.verdict.with_verdict`` replaces with the verdict table. Past ``MANY_CLASSES``
labels (intent has 77, real ones 150+) a chart of every class is unreadable: the per-class
chart keeps the worst and the most-changed classes, the confusion heat map gives way to a
table of the top confusions, and the full per-class table stays one click away.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone

import matplotlib

matplotlib.use("Agg")  # headless: processing containers and Airflow workers have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import PowerNorm  # noqa: E402

from retrain.verdict import VERDICT_PLACEHOLDER  # noqa: E402

MANY_CLASSES = 40
"""Above this many labels, charts show a chosen subset and confusions become a table."""
CHART_K = 15
"""With many labels, the per-class chart shows the K worst classes plus the K most changed."""

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


def _img(fig) -> str:
    """Render a figure to an inline <img> and free it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="chart" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _delta_cell(challenger: float, champion: float | None, higher_is_better: bool, fmt: str) -> str:
    if champion is None:
        return "<td>–</td>"
    delta = challenger - champion
    good = delta > 0 if higher_is_better else delta < 0
    css = "" if delta == 0 else ("better" if good else "worse")
    return f'<td class="{css}">{delta:+{fmt}}</td>'


def _summary_table(metrics: dict) -> str:
    challenger, champion = metrics["challenger"], metrics["champion"]
    rows = [
        ("macro F1", lambda b: b["macro_f1"], True, ".4f"),
        ("accuracy", lambda b: b["accuracy"], True, ".4f"),
        ("latency p50 (ms)", lambda b: b["latency_ms"]["p50"], False, ".2f"),
        ("latency p99 (ms)", lambda b: b["latency_ms"]["p99"], False, ".2f"),
        ("latency mean (ms)", lambda b: b["latency_ms"]["mean"], False, ".2f"),
    ]
    version = f" (v{html.escape(str(champion.get('version')))})" if champion and champion.get("version") else ""
    out = [f"<table><tr><th>metric</th><th>challenger</th><th>champion{version}</th><th>Δ challenger − champion</th></tr>"]
    for name, get, higher, fmt in rows:
        champ = get(champion) if champion else None
        champ_cell = f"{champ:{fmt}}" if champ is not None else "–"
        out.append(
            f"<tr><td>{name}</td><td>{get(challenger):{fmt}}</td><td>{champ_cell}</td>{_delta_cell(get(challenger), champ, higher, fmt)}</tr>"
        )
    return "\n".join(out) + "</table>"


def _paired_table(paired: dict) -> str:
    """The 2x2 agreement counts behind McNemar: where the two models differ, and how."""
    if paired["champion_correct"] is None:
        return ""
    a, b = np.array(paired["challenger_correct"]), np.array(paired["champion_correct"])
    cells = {
        "both correct": int(np.sum(a & b)),
        "only challenger correct": int(np.sum(a & (1 - b))),
        "only champion correct": int(np.sum((1 - a) & b)),
        "both wrong": int(np.sum((1 - a) & (1 - b))),
    }
    rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in cells.items())
    return f"<h2>Paired results</h2><table><tr><th>golden examples</th><th>count</th></tr>{rows}</table>"


def _confusion_chart(block: dict, labels: list[str], title: str) -> str:
    """Row-normalised heatmap; a square-root colour scale keeps small confusions visible."""
    matrix = np.array(block["confusion_matrix"], dtype=float)
    shares = matrix / np.clip(matrix.sum(axis=1, keepdims=True), 1, None)
    side = max(6.0, 0.14 * len(labels) + 3)
    fontsize = 8 if len(labels) <= 20 else 6
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(shares, cmap="Blues", norm=PowerNorm(gamma=0.5, vmin=0, vmax=1), interpolation="nearest")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(len(labels)), labels, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.03, label="share of the true class")
    return f'<figure class="confusion-heatmap">{_img(fig)}</figure>'


def _top_confusions(metrics: dict, k: int) -> str:
    """The k most frequent (true → predicted) errors of the challenger, with the champion's count beside."""
    labels = metrics["labels"]
    matrix = np.array(metrics["challenger"]["confusion_matrix"])
    totals = matrix.sum(axis=1)
    errors = matrix.copy()
    np.fill_diagonal(errors, 0)
    champion = np.array(metrics["champion"]["confusion_matrix"]) if metrics["champion"] else None
    pairs = sorted(((int(i), int(j)) for i, j in zip(*np.nonzero(errors))), key=lambda ij: (-errors[ij], labels[ij[0]], labels[ij[1]]))
    if not pairs:
        return "<p>No confusions.</p>"
    shown = pairs[:k]
    rows = []
    for i, j in shown:
        champ = f"<td>{int(champion[i, j])}</td>" if champion is not None else ""
        rows.append(
            f"<tr><td>{html.escape(labels[i])}</td><td>{html.escape(labels[j])}</td><td>{int(errors[i, j])}</td>"
            f"<td>{errors[i, j] / max(int(totals[i]), 1):.1%}</td>{champ}</tr>"
        )
    in_shown, all_errors = sum(int(errors[ij]) for ij in shown), int(errors.sum())
    caption = (
        f"<p class='meta'>The {len(shown)} most frequent of {len(pairs)} confused pairs hold {in_shown} of the "
        f"challenger's {all_errors} errors ({in_shown / all_errors:.0%}).</p>"
    )
    head = "<th>champion count</th>" if champion is not None else ""
    return (
        f"{caption}<table class='top-confusions'><tr><th>true</th><th>predicted as</th><th>count</th>"
        f"<th>share of the true class</th>{head}</tr>{''.join(rows)}</table>"
    )


def _chart_classes(metrics: dict) -> tuple[list[str], str]:
    """The classes the per-class chart shows and a caption saying which and why."""
    labels = metrics["labels"]
    if len(labels) <= MANY_CLASSES:
        return labels, f"All {len(labels)} classes, weakest challenger F1 on top."
    challenger, champion = metrics["challenger"]["per_class"], (metrics["champion"] or {}).get("per_class")
    worst = sorted(labels, key=lambda name: (challenger[name]["f1"], name))[:CHART_K]
    every = " The full per-class table below lists every class."
    if not champion:
        return worst, f"Showing {len(worst)} of {len(labels)} classes: the {len(worst)} with the lowest challenger F1.{every}"
    change = {name: challenger[name]["f1"] - champion[name]["f1"] for name in labels}
    changed = [name for name in sorted(labels, key=lambda name: (-abs(change[name]), name)) if change[name]][:CHART_K]
    shown = list(dict.fromkeys(worst + changed))
    both = len(worst) + len(changed) - len(shown)
    return shown, (
        f"Showing {len(shown)} of {len(labels)} classes: the {len(worst)} with the lowest challenger F1 and the "
        f"{len(changed)} whose F1 changed most against the champion ({both} in both); Δ F1 on the right.{every}"
    )


def _f1_chart(metrics: dict) -> str:
    """Horizontal bars (long label names read better sideways), weakest classes on top."""
    chosen, caption = _chart_classes(metrics)
    labels = sorted(chosen, key=lambda name: (metrics["challenger"]["per_class"][name]["f1"], name))
    roles = [r for r in ("challenger", "champion") if metrics[r]]
    y = np.arange(len(labels))
    height = 0.8 / len(roles)
    fig, ax = plt.subplots(figsize=(9, max(4.0, 0.2 * len(labels) * len(roles) + 1.5)))
    for i, role in enumerate(roles):
        values = [metrics[role]["per_class"][name]["f1"] for name in labels]
        ax.barh(y + i * height, values, height=height, color=COLORS[role], label=role)
    centres = y + height * (len(roles) - 1) / 2
    ax.set_yticks(centres, labels, fontsize=6 if len(labels) > 40 else 8)
    if metrics["champion"]:
        for centre, name in zip(centres, labels):
            delta = metrics["challenger"]["per_class"][name]["f1"] - metrics["champion"]["per_class"][name]["f1"]
            colour = "#137333" if delta > 0 else "#b3261e" if delta < 0 else "#666"
            ax.text(1.01, centre, f"{delta:+.2f}", va="center", fontsize=7, color=colour, transform=ax.get_yaxis_transform())
        ax.text(1.01, 1.0, "Δ F1", va="bottom", fontsize=7, transform=ax.transAxes)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper right")  # weakest (shortest) bars are on top, so this corner is free
    ax.set_title("Per-class F1 (sorted by challenger)")
    return f'<figure class="per-class-chart"><figcaption>{html.escape(caption)}</figcaption>{_img(fig)}</figure>'


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
    return _img(fig)


def _per_class_table(metrics: dict) -> str:
    """Every class, largest regressions first when there is a champion."""
    challenger, champion = metrics["challenger"]["per_class"], (metrics["champion"] or {}).get("per_class")

    def delta(name: str) -> float:
        return challenger[name]["f1"] - champion[name]["f1"] if champion else challenger[name]["f1"]

    rows = []
    for name in sorted(metrics["labels"], key=delta):
        c = challenger[name]
        champ = f"<td>{champion[name]['f1']:.3f}</td>{_delta_cell(c['f1'], champion[name]['f1'], True, '.3f')}" if champion else ""
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{c['support']}</td><td>{c['precision']:.3f}</td>"
            f"<td>{c['recall']:.3f}</td><td>{c['f1']:.3f}</td>{champ}</tr>"
        )
    head = "<th>champion F1</th><th>Δ F1</th>" if champion else ""
    return (
        f"<details class='per-class-table'><summary>Per-class table: all {len(rows)} classes, "
        f"{'largest F1 drops' if champion else 'lowest F1'} first</summary>"
        "<table><tr><th>class</th><th>support</th><th>precision</th>"
        f"<th>recall</th><th>challenger F1</th>{head}</tr>{''.join(rows)}</table></details>"
    )


def build_report(metrics: dict, latencies: dict[str, list[float] | None]) -> str:
    """The whole page; ``latencies`` holds the raw per-request samples ({role: [ms, ...]})."""
    protocol = metrics["protocol"]
    champion = metrics["champion"]
    champion_note = "" if champion else "<p><b>No champion</b>: first model of this lineage, only absolute criteria apply.</p>"
    meta = (
        f"golden set <b>{html.escape(str(metrics['golden_version']))}</b> "
        f"(sha256 {metrics['golden_content_sha256'][:12]}…), {metrics['n_examples']} examples, "
        f"{len(metrics['labels'])} classes · latency: batch size 1, {protocol['warmup']} warm-up + "
        f"{protocol['requests']} timed requests, {protocol['threads']} thread(s) · generated "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    )
    labels = metrics["labels"]
    if len(labels) > MANY_CLASSES:
        confusions = [
            "<h2>Top confusions (challenger)</h2>",
            f"<p>{len(labels)} classes: a {len(labels)}×{len(labels)} heat map is unreadable, so the most frequent "
            "confusions are listed instead.</p>",
            _top_confusions(metrics, k=25),
        ]
    else:
        confusions = [
            "<h2>Confusion matrix (challenger)</h2>",
            _confusion_chart(metrics["challenger"], labels, "Challenger: rows true, columns predicted"),
            "<h3>Most frequent confusions (challenger)</h3>",
            _top_confusions(metrics, k=10),
        ]
    sections = [
        "<h1>Evaluation report</h1>",
        VERDICT_PLACEHOLDER,
        f"<p class='meta'>{meta}</p>",
        champion_note,
        "<h2>Summary</h2>",
        _summary_table(metrics),
        _paired_table(metrics["paired"]),
        "<h2>Per-class F1</h2>",
        _f1_chart(metrics),
        _per_class_table(metrics),
        *confusions,
        "<h2>Latency</h2>",
        _latency_chart(latencies),
    ]
    body = "\n".join(s for s in sections if s)
    return f'<!doctype html><html><head><meta charset="utf-8"><title>Evaluation report</title><style>{STYLE}</style></head><body>{body}</body></html>\n'
