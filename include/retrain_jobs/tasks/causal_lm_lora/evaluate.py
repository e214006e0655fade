"""Evaluation side of the causal_lm_lora task type: format-following of greedy generations, and perplexities.

The golden directory holds ``golden.jsonl`` ({key, text: prompt, label: reference response}, as seed publishes a
classifier's golden set). Each model answers every golden prompt with a greedy, seeded generation (batched,
left-padded, ``max_new_tokens`` from the model's lm_spec.json). Per model:

- ``format_valid``: the share of generations that parse into the required format: the generated text, stripped,
  is one JSON object with exactly the schema's fields (those of the valid responses in lm_spec.json), each holding
  one of the values the schema allows for it (``parse_response``);
- ``format_exact_match``: the share that are valid and whose fields equal the reference response's fields
  (``exact_match``); per field, ``field_accuracy`` counts a generation whose field has the reference value;
- ``eval_loss`` and ``perplexity``: mean next-token cross-entropy over the reference responses' tokens (the
  end-of-sequence token included) given the wrapped prompt (teacher forcing), and exp of it;
- ``text_perplexity``: perplexity over the first ``TEXT_SAMPLE`` golden prompts as plain text, without the template
  or a response: held-out general text, to catch the adapter's forgetting of the base model's language modelling.

The base model (loaded alone from the pinned directory the challenger's adapter sits on) is scored the same way as
``baseline`` in the same report. The
per-prompt exact-match outcomes (0/1) of every model go to ``paired`` for the gate's exact McNemar test. Latency is
one request as serving makes it: one prompt, greedy generation.
"""

from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from retrain_jobs.tasks.causal_lm_lora import train as training_side
from retrain_jobs.tasks.causal_lm_lora.train import collate, encode_pairs, response_loss

METRICS = ("format_exact_match", "format_valid")
NAMES = {
    "format_exact_match": "format exact match",
    "format_valid": "format valid",
    "perplexity": "perplexity",
    "text_perplexity": "text perplexity",
}
TEXT_SAMPLE = 64
SEED = 0
LATENCY_CALL = "generate([prompt]): greedy, max_new_tokens from lm_spec.json"

load = training_side.load
"""The task's loader (base digest and weights checked), shared with serving and rollback."""


def read_golden(golden_dir: Path) -> list[dict]:
    """The golden prompts ({"key", "text", "label": reference response}) of a verified golden directory, in key
    order."""
    path = golden_dir / "golden.jsonl"
    examples = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not examples:
        raise ValueError(f"{path}: no examples")
    keys = [ex["key"] for ex in examples]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: duplicate keys")
    return sorted(examples, key=lambda ex: ex["key"])


def schema_of(responses: list[str]) -> dict[str, set]:
    """Field -> allowed values, from the closed schema's valid responses."""
    schema: dict[str, set] = {}
    for text in responses:
        for name, value in json.loads(text).items():
            schema.setdefault(name, set()).add(json.dumps(value))
    return schema


def parse_response(text: str, schema: dict[str, set]) -> dict | None:
    """The fields of a generation if it is exactly one JSON object of the schema (its fields, allowed values); else
    None."""
    try:
        value = json.loads(text.strip())
    except (json.JSONDecodeError, ValueError):
        return None
    if not isinstance(value, dict) or set(value) != set(schema):
        return None
    if any(json.dumps(v) not in schema[k] for k, v in value.items()):
        return None
    return value


def exact_match(text: str, reference: str, schema: dict[str, set]) -> bool:
    """The generation parses into the format and its fields equal the reference's."""
    parsed = parse_response(text, schema)
    return parsed is not None and parsed == json.loads(reference)


def _field_hits(text: str, reference: dict) -> dict[str, bool]:
    try:
        value = json.loads(text.strip())
    except (json.JSONDecodeError, ValueError):
        value = None
    return {k: isinstance(value, dict) and value.get(k) == v for k, v in reference.items()}


def teacher_forced(model, rows: list[dict], batch_size: int) -> float:
    """Mean cross-entropy over the reference responses' tokens given the wrapped prompts."""
    spec, tokenizer = model.spec, model.tokenizer
    pairs = encode_pairs(tokenizer, spec.prompt_template, rows, spec.max_prompt_tokens, 10_000)
    return _mean_loss(model, pairs, batch_size)


def text_loss(model, texts: list[str], batch_size: int) -> float:
    """Mean next-token cross-entropy over plain texts (every token after the first)."""
    ids = model.tokenizer(texts, add_special_tokens=False)["input_ids"]
    pairs = [(t[:1], t[1:]) for t in ids if len(t) > 1]
    return _mean_loss(model, pairs, batch_size)


def _mean_loss(model, pairs, batch_size: int) -> float:
    total, n = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            loss, count = response_loss(
                model.model, *collate(pairs[start : start + batch_size], model.tokenizer.pad_token_id)
            )
            total, n = total + loss.item(), n + count
    return total / max(n, 1)


def score_model(model, examples: list[dict], batch_size: int) -> tuple[dict, list[int], list[str]]:
    """One model's block, its per-prompt exact-match outcomes and its generations."""
    started = time.perf_counter()
    torch.manual_seed(
        SEED
    )  # greedy decoding draws nothing, but a seeded generator keeps any sampling path reproducible
    schema = schema_of(model.spec.responses)
    generations = model.generate([ex["text"] for ex in examples], batch_size)
    valid = [parse_response(g, schema) is not None for g in generations]
    matched = [exact_match(g, ex["label"], schema) for g, ex in zip(generations, examples, strict=True)]
    fields = {k: 0 for k in schema}
    for g, ex in zip(generations, examples, strict=True):
        for k, hit in _field_hits(g, json.loads(ex["label"])).items():
            fields[k] += int(hit)
    rows = [{"prompt": ex["text"], "response": ex["label"]} for ex in examples]
    loss = teacher_forced(model, rows, batch_size)
    text = text_loss(model, [ex["text"] for ex in examples[:TEXT_SAMPLE]], batch_size)
    n = len(examples)
    block = {
        "format_exact_match": sum(matched) / n,
        "format_valid": sum(valid) / n,
        "field_accuracy": {k: v / n for k, v in fields.items()},
        "eval_loss": loss,
        "perplexity": math.exp(loss),
        "text_perplexity": math.exp(text),
        "exact_matches": int(sum(matched)),
        "valid_generations": int(sum(valid)),
        "eval_seconds": round(time.perf_counter() - started, 3),
    }
    return block, [int(m) for m in matched], generations


def score(examples: list[dict], challenger, champion, batch_size: int, options: dict) -> dict:
    """Both models' blocks, the base model's as the baseline, and the per-prompt outcomes of each."""
    blocks, outcomes, samples = {}, {}, {}
    for role, model in (("challenger", challenger), ("champion", champion)):
        if model is None:
            blocks[role] = outcomes[role] = None
            continue
        blocks[role], outcomes[role], samples[role] = score_model(model, examples, batch_size)
    base = challenger.base_model()  # the pinned base the challenger's adapter sits on, without the adapter
    baseline, outcomes["baseline"], samples["baseline"] = score_model(base, examples, batch_size)
    del base
    baseline = {
        **baseline,
        "base_model": challenger.spec.base_model,
        "base_model_digest": challenger.spec.base_model_digest,
    }
    shown = [
        {
            "key": ex["key"],
            "prompt": ex["text"],
            "reference": ex["label"],
            **{role: samples[role][i] for role in samples},
        }
        for i, ex in enumerate(examples[:8])
    ]
    fields = {"baseline": baseline, "samples": shown, "responses": challenger.spec.responses}
    protocol = {
        "call": LATENCY_CALL,
        "generation": f"greedy (do_sample=False), torch seed {SEED}, batched and left-padded, "
        f"max_new_tokens {challenger.spec.max_new_tokens}",
        "format": "the stripped generation is one JSON object with exactly the schema's fields, each an allowed value",
        "perplexity": "exp of mean cross-entropy over the reference responses' tokens (EOS included), teacher-forced",
        "text_perplexity": f"exp of mean next-token cross-entropy over the first {TEXT_SAMPLE} golden prompts "
        "as plain text",
    }
    return {
        "fields": fields,
        "blocks": blocks,
        "paired": {"keys": [ex["key"] for ex in examples], **outcomes},
        "protocol": protocol,
    }


def latency_requests(examples: list[dict]) -> list[str]:
    """What one request holds: one golden prompt."""
    return [ex["text"] for ex in examples]


def predict_one(model, request: str) -> None:
    """One prompt, answered by greedy generation."""
    model.generate([request], 1)


def summary_rows(metrics: dict) -> list[tuple[str, str, bool, str]]:
    """(block key, name, higher is better, format) of the headline figures and the perplexities."""
    return [(m, NAMES[m], True, ".4f") for m in METRICS] + [
        ("perplexity", NAMES["perplexity"], False, ".3f"),
        ("text_perplexity", NAMES["text_perplexity"], False, ".2f"),
    ]


def describe(metrics: dict) -> str:
    base, responses = html.escape(metrics["baseline"]["base_model"]), len(metrics["responses"])
    return f"greedy generations in a {responses}-response JSON schema; {base} without the adapter as baseline"


def report_sections(metrics: dict) -> list[str]:
    """The base model beside the adapter models, and a few generations."""
    from retrain_jobs.report import delta_cell

    baseline, roles = metrics["baseline"], [r for r in ("challenger", "champion") if metrics[r]]
    head = "".join(f"<th>{r}</th><th>Δ vs base</th>" for r in roles)
    rows = []
    for key, name, higher, fmt in summary_rows(metrics):
        cells = "".join(
            f"<td>{metrics[r][key]:{fmt}}</td>{delta_cell(metrics[r][key], baseline[key], higher, fmt)}" for r in roles
        )
        rows.append(f"<tr><td>{name}</td><td>{baseline[key]:{fmt}}</td>{cells}</tr>")
    for field in baseline["field_accuracy"]:
        cells = "".join(
            f"<td>{metrics[r]['field_accuracy'][field]:.4f}</td>"
            f"{delta_cell(metrics[r]['field_accuracy'][field], baseline['field_accuracy'][field], True, '.4f')}"
            for r in roles
        )
        rows.append(
            f"<tr><td>{html.escape(field)} accuracy</td><td>{baseline['field_accuracy'][field]:.4f}</td>{cells}</tr>"
        )
    a, base = np.array(metrics["paired"]["challenger"]), np.array(metrics["paired"]["baseline"])
    counts = (
        f"<p>Per prompt exact match, challenger against the base model: {int(np.sum(a > base))} gained, "
        f"{int(np.sum(a < base))} lost, {int(np.sum(a == base))} the same.</p>"
    )
    sample_roles = ["baseline", *roles]
    sample_rows = "".join(
        "<tr>"
        + f"<td>{html.escape(s['prompt'])}</td><td><code>{html.escape(s['reference'])}</code></td>"
        + "".join(f"<td><code>{html.escape(s[r])}</code></td>" for r in sample_roles)
        + "</tr>"
        for s in metrics["samples"]
    )
    return [
        "<h2>Against the base model</h2>",
        f"<table><tr><th>metric</th><th>base model</th>{head}</tr>{''.join(rows)}</table>",
        counts,
        "<h2>Generations (first golden prompts)</h2>",
        "<table><tr><th>prompt</th><th>reference</th>"
        f"{''.join(f'<th>{r}</th>' for r in sample_roles)}</tr>{sample_rows}</table>",
    ]
