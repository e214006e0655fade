"""Gate operating characteristics: how often the gate rejects an equivalent challenger, and how often a worse one.

Measured: retrain.gate.evaluate_gate itself, with the intent config's gate policy, on seeded
simulated metrics dicts (the shape of metrics.json). Golden sets: 77 classes x 40 examples
(Banking77's golden set), 150 x 30 (the 150-intent case that motivated the per-class rule) and 150 classes with uneven
support,
20 to 80 examples (log-uniform). Each draw makes a fresh world: per-class error rates from
Beta(0.9, 11) (macro F1 about 0.92, worst class about 0.65-0.75) and, per class, 3 confusable
classes that take its errors. The champion predicts from that law; the challenger copies the
champion's prediction on a share rho of examples and otherwise draws its own from the same
law, so the pair is exchangeable and of exactly equal quality (an A/A test). rho = 0.9 is
the realistic level: it reproduces the 95% CI width of Δ macro F1 observed on
150 x 30 (0.006; about 1.3% of predictions differ); rho = 0.8 and 0.5 show noisier retrains.
Power: the same challenger made worse, either every correct prediction turned into a
confusion with probability delta, calibrated to an expected 3-point macro-F1 drop, or only
on one class of 30 examples and median quality (error rate 0.07), calibrated to an expected
20-point F1 drop on that class. Reported: the rejection rate of each criterion and overall,
with its number of draws and a 95% Wilson interval; beside it, the per-class rule the gate
had before (any judged class dropping more than 0.10 F1 fails). Targets: A/A overall
false-rejection rate at most 5%, power at least 80% for both worse challengers.
Run on its own to rewrite only its section of docs/performance.md:
``source scripts/env.sh && python bench/gate_oc.py [--quick] [--draws N]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import common
from common import PROJECT_ROOT, log, row, section_markers

NEIGHBOURS = 3
ERROR_BETA = (0.9, 11.0)
RHOS = (0.9, 0.8, 0.5)
REALISTIC_RHO = 0.9
TARGET_AA, TARGET_POWER = 0.05, 0.80
OVERALL_DROP, CLASS_DROP, CLASS_DROP_SUPPORT = 0.03, 0.20, 30
CRITERIA = ("per_class.regression", "per_class.floor", "delta.macro_f1", "delta.accuracy", "significance.macro_f1")
SECTION_START, SECTION_END = section_markers("gate_oc")
REPORT = PROJECT_ROOT / "docs" / "performance.md"


@dataclass(frozen=True)
class GoldenSet:
    name: str
    classes: int
    support: int | None  # None: uneven, 20 to 80 per class (log-uniform)

    def supports(self, rng: np.random.Generator) -> np.ndarray:
        if self.support is not None:
            return np.full(self.classes, self.support)
        return np.round(np.exp(rng.uniform(math.log(20), math.log(80), self.classes))).astype(np.int64)


GOLDEN_SETS = (GoldenSet("77 x 40", 77, 40), GoldenSet("150 x 30", 150, 30), GoldenSet("150, 20-80 uneven", 150, None))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial rate k/n."""
    if n == 0:
        return 0.0, 1.0
    p, denom = k / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / denom, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def world(rng: np.random.Generator, golden: GoldenSet, target_class: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels of a golden set, each class's error rate and its confusable classes; class 0 is the power target if
    asked."""
    supports = golden.supports(rng)
    error = rng.beta(*ERROR_BETA, golden.classes)
    if target_class:
        supports[0], error[0] = CLASS_DROP_SUPPORT, 0.07
    others = rng.random((golden.classes, golden.classes)).argsort(axis=1)[:, : NEIGHBOURS + 1]
    neighbours = np.array([row_[row_ != c][:NEIGHBOURS] for c, row_ in enumerate(others)])
    return np.repeat(np.arange(golden.classes), supports), error, neighbours


def confuse(rng: np.random.Generator, y: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    return neighbours[y, rng.integers(0, neighbours.shape[1], len(y))]


def predict(rng: np.random.Generator, y: np.ndarray, error: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    wrong = rng.random(len(y)) < error[y]
    return np.where(wrong, confuse(rng, y, neighbours), y)


def pair(rng: np.random.Generator, golden: GoldenSet, rho: float, worse: str, delta: float) -> tuple[np.ndarray, ...]:
    """(y, challenger, champion) for one draw. ``worse``: "" (A/A), "overall" or "class" (class 0), by ``delta``."""
    y, error, neighbours = world(rng, golden, worse == "class")
    champion = predict(rng, y, error, neighbours)
    challenger = np.where(rng.random(len(y)) < rho, champion, predict(rng, y, error, neighbours))
    if worse:
        hit = (challenger == y) & (rng.random(len(y)) < delta) & ((y == 0) if worse == "class" else True)
        challenger = np.where(hit, confuse(rng, y, neighbours), challenger)
    return y, challenger, champion


def per_class_f1(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    tp = np.bincount(y[y == pred], minlength=k)
    denom = np.bincount(y, minlength=k) + np.bincount(pred, minlength=k)
    return np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)


def metrics_dict(y: np.ndarray, a: np.ndarray, b: np.ndarray, k: int) -> dict:
    """What evaluate_gate reads from metrics.json (paired lists as numpy arrays: the gate takes either)."""
    labels = [f"class_{i}" for i in range(k)]
    support = np.bincount(y, minlength=k)

    def block(pred: np.ndarray, version: int | None) -> dict:
        f1 = per_class_f1(y, pred, k)
        return {
            "macro_f1": float(f1.mean()),
            "accuracy": float(np.mean(pred == y)),
            "latency_ms": {"p50": 5.0, "p99": 20.0},
            "per_class": {label: {"f1": float(f1[i]), "support": int(support[i])} for i, label in enumerate(labels)},
            "version": version,
        }

    return {
        "n_examples": len(y),
        "golden_version": "bench",
        "labels": labels,
        "challenger": block(a, None),
        "champion": block(b, 1),
        "paired": {
            "y_true": y,
            "challenger_pred": a,
            "champion_pred": b,
            "challenger_correct": a == y,
            "champion_correct": b == y,
        },
    }


def calibrate(golden: GoldenSet, rho: float, worse: str, target: float, seed: int, draws: int = 300) -> float:
    """The delta whose expected drop (macro F1, or class 0's F1) is ``target``, by bisection on common random
    numbers."""

    def mean_drop(delta: float) -> float:
        rng, drops = np.random.default_rng(seed), []
        for _ in range(draws):
            y, a, b = pair(rng, golden, rho, worse, delta)
            fa, fb = per_class_f1(y, a, golden.classes), per_class_f1(y, b, golden.classes)
            drops.append(fb.mean() - fa.mean() if worse == "overall" else fb[0] - fa[0])
        return float(np.mean(drops))

    low, high = 0.0, 1.0
    for _ in range(14):
        mid = (low + high) / 2
        low, high = (mid, high) if mean_drop(mid) < target else (low, mid)
    return (low + high) / 2


def simulate(policy, golden: GoldenSet, rho: float, worse: str, delta: float, draws: int, seed: int) -> dict:
    """Run the real gate on ``draws`` seeded pairs; count rejections per criterion and overall."""
    from retrain.gate import evaluate_gate

    rng = np.random.default_rng(seed)
    counts = dict.fromkeys((*CRITERIA, "other", "overall", "old_per_class_rule"), 0)
    deltas, target_drops = [], []
    for _ in range(draws):
        y, a, b = pair(rng, golden, rho, worse, delta)
        metrics = metrics_dict(y, a, b, golden.classes)
        gate = evaluate_gate(policy, metrics)
        failed = set(gate["failed"])
        for name in CRITERIA:
            counts[name] += name in failed
        counts["other"] += bool(failed - set(CRITERIA))
        counts["overall"] += bool(failed)
        drop = np.array(
            [
                metrics["champion"]["per_class"][lab]["f1"] - metrics["challenger"]["per_class"][lab]["f1"]
                for lab in metrics["labels"]
            ]
        )
        support = np.bincount(y, minlength=golden.classes)
        counts["old_per_class_rule"] += bool(
            np.any((drop > policy.per_class_max_regression) & (support >= policy.min_class_support))
        )
        deltas.append(metrics["challenger"]["macro_f1"] - metrics["champion"]["macro_f1"])
        target_drops.append(drop[0])
    return {
        "golden": golden.name,
        "rho": rho,
        "worse": worse,
        "delta": delta,
        "draws": draws,
        "seed": seed,
        "counts": counts,
        "mean_delta_macro_f1": float(np.mean(deltas)),
        "mean_class0_drop": float(np.mean(target_drops)),
    }


def rate(cell: dict, key: str) -> str:
    k, n = cell["counts"][key], cell["draws"]
    low, high = wilson(k, n)
    return f"{k / n:.1%} [{low:.1%}, {high:.1%}]"


def cells(quick: bool, draws: int | None, seed: int = 7) -> list[dict]:
    from retrain.config import load_model

    policy = load_model("intent").gate
    aa_draws = draws or (100 if quick else 300)
    power_draws = draws or (50 if quick else 100)
    out = []
    for g, golden in enumerate(GOLDEN_SETS):
        # every agreement level on the even sets; the uneven set at the realistic one (each cell costs a minute or two)
        rhos = (REALISTIC_RHO,) if golden.support is None or quick else RHOS
        for r, rho in enumerate(rhos):
            cell_seed = seed * 1000 + g * 10 + r
            started = time.perf_counter()
            out.append(simulate(policy, golden, rho, "", 0.0, aa_draws, cell_seed))
            for worse, target in (("overall", OVERALL_DROP), ("class", CLASS_DROP)):
                delta = calibrate(golden, rho, worse, target, seed=cell_seed + 500)
                out.append(
                    simulate(
                        policy, golden, rho, worse, delta, power_draws, cell_seed + (1 if worse == "overall" else 2)
                    )
                )
            log(
                f"{golden.name}, rho {rho}: A/A overall {rate(out[-3], 'overall')}, power overall-drop "
                f"{rate(out[-2], 'overall')}, one-class drop {rate(out[-1], 'overall')} "
                f"({time.perf_counter() - started:.0f}s)"
            )
    return out


def tables(results: list[dict], policy_line: str) -> list[str]:
    aa = [c for c in results if not c["worse"]]
    lines = [
        f"Gate policy: `config/models/intent.yaml` ({policy_line}).",
        "",
        "**A/A: rejection rate of an equal-quality challenger** (false rejections; 95% Wilson interval). "
        '"old per-class rule" is the earlier criterion (any judged class dropping more than 0.10 F1), '
        'on the same draws; "other" is any remaining criterion (floors, latency, sample size).',
        "",
        "| golden set | rho | draws | disagree | "
        + " | ".join(CRITERIA)
        + " | other | **overall** | target | met | old per-class rule |",
        "|---|---|---|---|" + "---|" * (len(CRITERIA) + 5),
    ]
    for c in aa:
        overall = c["counts"]["overall"] / c["draws"]
        lines.append(
            f"| {c['golden']} | {c['rho']} | {c['draws']} | {c.get('disagreement', 0):.1%} | "
            + " | ".join(rate(c, k) for k in CRITERIA)
            + f" | {rate(c, 'other')} | **{rate(c, 'overall')}** | ≤ {TARGET_AA:.0%} | "
            + ("met" if overall <= TARGET_AA else "**not met**")
            + f" | {rate(c, 'old_per_class_rule')} |"
        )
    lines += [
        "",
        "**Power: rejection rate of a truly worse challenger** (the criterion that should catch it, and the gate "
        "overall).",
        "",
        "| golden set | rho | worse by | draws | delta (calibrated) | mean observed drop | per_class.regression | "
        "significance.macro_f1 | delta.macro_f1 | **overall** | target | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in results:
        if not c["worse"]:
            continue
        what = (
            f"{OVERALL_DROP * 100:.0f} points macro F1"
            if c["worse"] == "overall"
            else f"{CLASS_DROP * 100:.0f} points F1 on one class of {CLASS_DROP_SUPPORT}"
        )
        observed = -c["mean_delta_macro_f1"] if c["worse"] == "overall" else c["mean_class0_drop"]
        overall = c["counts"]["overall"] / c["draws"]
        lines.append(
            f"| {c['golden']} | {c['rho']} | {what} | {c['draws']} | {c['delta']:.4f} | {observed:.3f} | "
            f"{rate(c, 'per_class.regression')} | {rate(c, 'significance.macro_f1')} | {rate(c, 'delta.macro_f1')} | "
            f"**{rate(c, 'overall')}** | ≥ {TARGET_POWER:.0%} | {'met' if overall >= TARGET_POWER else '**not met**'} |"
        )
    misses = []
    for c in results:
        overall = c["counts"]["overall"] / c["draws"]
        if (not c["worse"] and overall > TARGET_AA) or (c["worse"] and overall < TARGET_POWER):
            top = max(CRITERIA, key=lambda k: c["counts"][k]) if not c["worse"] else "per_class.regression"
            what = "A/A" if not c["worse"] else f"power ({c['worse']} drop)"
            misses.append(
                f"- {what} at {c['golden']}, rho {c['rho']}: {overall:.1%} overall; "
                f"{top} alone {c['counts'][top] / c['draws']:.1%}."
            )
    lines += [
        "",
        "How to read: rho is the share of golden examples on which the challenger copies the champion's "
        f'prediction ("disagree" is the measured share of differing predictions). rho = {REALISTIC_RHO} is the '
        "realistic level for retrains of one recipe: it reproduces the 95% CI width of Δ macro F1 observed on a real "
        "150-intent retrain on 150 x 30 ([-0.004, +0.002]); lower rho is a noisier retrain, shown to bound the gate's "
        "behaviour. "
        "The bars are not tuned to these draws: per_class_alpha is the conventional 0.05 family-wise level, and "
        "the other thresholds are the ones the config had. The A/A misses at low rho come from significance.macro_f1, "
        "the non-inferiority bound on overall macro F1 (its 95% CI must clear -0.01: with more disagreement the CI "
        "widens and an equivalent challenger cannot prove non-inferiority), not from the per-class criteria. "
        "Under this example-independent model the old per-class rule trips far less at rho 0.9 than the 73% measured "
        "on the 150-intent retrain, which was a bootstrap around one observed pair, not an A/A rate.",
        "",
    ]
    lines += ["Targets not met:", "", *misses] if misses else ["Every target met in every cell."]
    return lines


def run(quick: bool, work: Path | None = None, draws: int | None = None) -> dict:
    from retrain.config import load_model

    policy = load_model("intent").gate
    started = time.perf_counter()
    results = cells(quick, draws)
    for c in results:  # prediction disagreement of each rho, for the tables: measured, not assumed
        rng = np.random.default_rng(c["seed"])
        golden = next(g for g in GOLDEN_SETS if g.name == c["golden"])
        c["disagreement"] = float(
            np.mean([np.mean(a != b) for _, a, b in (pair(rng, golden, c["rho"], "", 0.0) for _ in range(20))])
        )
    policy_line = (
        f"per_class_max_regression {policy.per_class_max_regression}, per_class_floor {policy.per_class_floor}, "
        f"per_class_alpha {policy.per_class_alpha}, min_class_support {policy.min_class_support}, "
        f"min_delta {policy.min_delta}, significance margin {policy.significance.margin} at "
        f"{policy.significance.confidence:.0%}, {policy.significance.resamples} resamples"
    )
    rows = []
    for c in results:
        if c["rho"] != REALISTIC_RHO:
            continue
        overall = c["counts"]["overall"] / c["draws"]
        if not c["worse"]:
            rows.append(
                row(
                    "Gate OC",
                    f"A/A false-rejection rate, {c['golden']}, rho {c['rho']} (95% CI "
                    f"{rate(c, 'overall').split(' ', 1)[1]}; "
                    f"old per-class rule {rate(c, 'old_per_class_rule').split(' ')[0]})",
                    f"{overall:.1%}",
                    "",
                    c["draws"],
                    target=f"≤ {TARGET_AA:.0%}",
                    met=overall <= TARGET_AA,
                )
            )
        else:
            what = "3-point macro-F1 drop" if c["worse"] == "overall" else "20-point F1 drop on one class of 30"
            rows.append(
                row(
                    "Gate OC",
                    f"power, {what}, {c['golden']}, rho {c['rho']} (95% CI {rate(c, 'overall').split(' ', 1)[1]})",
                    f"{overall:.1%}",
                    "",
                    c["draws"],
                    target=f"≥ {TARGET_POWER:.0%}",
                    met=overall >= TARGET_POWER,
                )
            )
    seconds = time.perf_counter() - started
    section = tables(results, policy_line)
    return {
        "rows": rows,
        "section": section,
        "details": {"cells": results, "seconds": round(seconds, 1), "quick": quick},
    }


def write_section(section: list[str], command: str) -> None:
    """Replace (or append) only this benchmark's section of docs/performance.md."""
    common.write_section("gate_oc", "Gate operating characteristics", section, command)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer draws, the realistic agreement level only")
    parser.add_argument("--draws", type=int, default=None, help="draws per cell (overrides the mode's)")
    args = parser.parse_args()
    outcome = run(args.quick, draws=args.draws)
    print("\n".join(outcome["section"]))
    out = PROJECT_ROOT / "bench" / "results" / "gate_oc.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(outcome, indent=2, default=str) + "\n")
    write_section(outcome["section"], "python bench/gate_oc.py " + " ".join(sys.argv[1:]))
    print(
        f"\nwrote {out.relative_to(PROJECT_ROOT)} and the gate_oc section of {REPORT.relative_to(PROJECT_ROOT)} "
        f"({outcome['details']['seconds']:.0f}s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
