"""Evaluation side of the text_classification task type (intent, sentiment).

evaluate.py verifies the golden set, times the models under the shared latency protocol
and writes metrics.json and the report; this module loads a classifier, scores it and
adds the classifier's sections to the report. Past ``MANY_CLASSES`` labels (intent has 77,
real ones 150+) a chart of every class is unreadable: the per-class chart keeps the worst
and the most-changed classes, the confusion heat map gives way to a table of the top
confusions, and the full per-class table stays one click away.

Metric choices: labels are matched by name (the golden ``label`` field), never by id, so
two models with differently ordered label lists compare fairly. Macro F1 averages over
every label in ``labels`` (``labels=range(len(labels))``, ``zero_division=0``): a class
absent from the golden set then scores 0 for both models alike instead of silently
changing the denominator between runs; per-class ``support`` shows where that happens.
With ``escalation_label`` in the task options (sentiment: ``negative``), each model's block
also holds the false-escalation rate: of the golden examples whose true label is not the
escalation label, the share predicted as it (each one sends a calm customer to a person).
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import numpy as np
from matplotlib.colors import PowerNorm
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from retrain_jobs.report import COLORS, delta_cell, img, plt  # report first: it selects matplotlib's headless backend
from retrain_jobs.tasks.text_classification import train as training_side

MANY_CLASSES = 40
"""Above this many labels, charts show a chosen subset and confusions become a table."""
CHART_K = 15
"""With many labels, the per-class chart shows the K worst classes plus the K most changed."""
LATENCY_CALL = "predict_proba([text], batch_size=1): tokenize + forward + softmax"
MACRO_F1 = "mean over all labels (labels=range(len(labels)), zero_division=0)"

load = training_side.load
"""The task's loader (weights checked against the recorded digest), shared with serving and rollback."""


def read_golden(golden_dir: Path) -> list[dict]:
    """The golden examples ({"key", "text", "label"}) of a verified golden directory, in key order."""
    with open(golden_dir / "golden.jsonl", encoding="utf-8") as handle:
        examples = [json.loads(line) for line in handle if line.strip()]
    keys = [ex["key"] for ex in examples]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{golden_dir / 'golden.jsonl'}: duplicate keys")
    if not examples:
        raise ValueError(f"{golden_dir / 'golden.jsonl'}: no examples")
    return sorted(examples, key=lambda ex: ex["key"])


def label_space(label_lists: list[list[str]], golden_labels: set[str]) -> list[str]:
    """The challenger's labels, then any the champion adds; every golden label must be in it."""
    labels: list[str] = []
    for names in label_lists:
        labels += [name for name in names if name not in labels]
    unknown = sorted(golden_labels - set(labels))
    if unknown:
        raise ValueError(f"golden labels unknown to the model(s), schema mismatch: {unknown}")
    return labels


def false_escalation(y_true: np.ndarray, y_pred: np.ndarray, escalation: int) -> dict:
    """Of the examples whose true label is not ``escalation``, how many (and what share) are predicted as it."""
    calm = y_true != escalation
    false = int(np.sum(calm & (y_pred == escalation)))
    total = int(np.sum(calm))
    return {"rate": false / total if total else 0.0, "false_escalations": false, "non_escalation_examples": total}


def classification_block(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], escalation: int | None) -> dict:
    """Overall and per-class figures of one model's predictions (label ids in ``labels``)."""
    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    block = {
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "accuracy": float(np.mean(y_true == y_pred)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
    }
    if escalation is not None:
        block["false_escalation"] = false_escalation(y_true, y_pred, escalation)
        block["false_escalation_rate"] = block["false_escalation"]["rate"]
    return block


def score(examples: list[dict], challenger, champion, batch_size: int, options: dict) -> dict:
    """Both models' blocks on the golden examples, the paired per-example results, and top-level fields."""
    labels = label_space([m.labels for m in (challenger, champion) if m], {ex["label"] for ex in examples})
    escalation_label = options.get("escalation_label")
    if escalation_label is not None and escalation_label not in labels:
        raise ValueError(f"escalation label {escalation_label!r} is not among the models' labels {labels}")
    escalation = labels.index(escalation_label) if escalation_label is not None else None
    texts = [ex["text"] for ex in examples]
    y_true = np.array([labels.index(ex["label"]) for ex in examples])
    blocks, preds = {}, {}
    for role, model in (("challenger", challenger), ("champion", champion)):
        if model is None:
            blocks[role], preds[role] = None, None
            continue
        started = time.perf_counter()
        local_pred = model.predict_proba(texts, batch_size=batch_size).argmax(axis=1)
        eval_seconds = time.perf_counter() - started
        to_global = np.array([labels.index(name) for name in model.labels])  # map by name
        preds[role] = to_global[local_pred]
        blocks[role] = {
            **classification_block(y_true, preds[role], labels, escalation),
            "eval_seconds": round(eval_seconds, 3),
        }
    a, b = preds["challenger"], preds["champion"]
    paired = {
        "keys": [ex["key"] for ex in examples],
        "y_true": y_true.tolist(),
        "challenger_pred": a.tolist(),
        "champion_pred": b.tolist() if b is not None else None,
        "challenger_correct": (a == y_true).astype(int).tolist(),
        "champion_correct": (b == y_true).astype(int).tolist() if b is not None else None,
    }
    fields = {"labels": labels, **({"escalation_label": escalation_label} if escalation_label is not None else {})}
    return {
        "fields": fields,
        "blocks": blocks,
        "paired": paired,
        "protocol": {"call": LATENCY_CALL, "macro_f1": MACRO_F1},
    }


def latency_requests(examples: list[dict]) -> list[str]:
    """What one request holds: one golden text."""
    return [ex["text"] for ex in examples]


def predict_one(model, request: str) -> None:
    """One single-example request, as serving would make it."""
    model.predict_proba([request], batch_size=1)


def summary_rows(metrics: dict) -> list[tuple[str, str, bool, str]]:
    """(block key, name, higher is better, format) of the headline figures: report summary, MLflow, job log."""
    rows = [("macro_f1", "macro F1", True, ".4f"), ("accuracy", "accuracy", True, ".4f")]
    if metrics.get("escalation_label") is not None:
        rows.append(("false_escalation_rate", "false-escalation rate", False, ".4f"))
    return rows


def describe(metrics: dict) -> str:
    """What the report's header says about the label space."""
    escalation = metrics.get("escalation_label")
    return f"{len(metrics['labels'])} classes" + (
        f", escalation label {html.escape(escalation)!s}" if escalation else ""
    )


def report_sections(metrics: dict) -> list[str]:
    """The classifier's sections: paired agreement, per-class F1 (chart and table), confusions."""
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
    return [
        _paired_table(metrics["paired"]),
        "<h2>Per-class F1</h2>",
        _f1_chart(metrics),
        _per_class_table(metrics),
        *confusions,
    ]


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
    return f'<figure class="confusion-heatmap">{img(fig)}</figure>'


def _top_confusions(metrics: dict, k: int) -> str:
    """The k most frequent (true → predicted) errors of the challenger, with the champion's count beside."""
    labels = metrics["labels"]
    matrix = np.array(metrics["challenger"]["confusion_matrix"])
    totals = matrix.sum(axis=1)
    errors = matrix.copy()
    np.fill_diagonal(errors, 0)
    champion = np.array(metrics["champion"]["confusion_matrix"]) if metrics["champion"] else None
    pairs = sorted(
        ((int(i), int(j)) for i, j in zip(*np.nonzero(errors), strict=True)),
        key=lambda ij: (-errors[ij], labels[ij[0]], labels[ij[1]]),
    )
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
        return (
            worst,
            f"Showing {len(worst)} of {len(labels)} classes: the {len(worst)} with the lowest challenger F1.{every}",
        )
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
        for centre, name in zip(centres, labels, strict=True):
            delta = metrics["challenger"]["per_class"][name]["f1"] - metrics["champion"]["per_class"][name]["f1"]
            colour = "#137333" if delta > 0 else "#b3261e" if delta < 0 else "#666"
            ax.text(
                1.01, centre, f"{delta:+.2f}", va="center", fontsize=7, color=colour, transform=ax.get_yaxis_transform()
            )
        ax.text(1.01, 1.0, "Δ F1", va="bottom", fontsize=7, transform=ax.transAxes)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper right")  # weakest (shortest) bars are on top, so this corner is free
    ax.set_title("Per-class F1 (sorted by challenger)")
    return f'<figure class="per-class-chart"><figcaption>{html.escape(caption)}</figcaption>{img(fig)}</figure>'


def _per_class_table(metrics: dict) -> str:
    """Every class, largest regressions first when there is a champion."""
    challenger, champion = metrics["challenger"]["per_class"], (metrics["champion"] or {}).get("per_class")

    def delta(name: str) -> float:
        return challenger[name]["f1"] - champion[name]["f1"] if champion else challenger[name]["f1"]

    rows = []
    for name in sorted(metrics["labels"], key=delta):
        c = challenger[name]
        champ = (
            f"<td>{champion[name]['f1']:.3f}</td>{delta_cell(c['f1'], champion[name]['f1'], True, '.3f')}"
            if champion
            else ""
        )
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
