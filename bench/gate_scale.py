"""Gate scale: the paired bootstrap and the whole gate on large golden sets.

Measured: retrain.gate.paired_bootstrap_macro_f1 with the intent config's significance
settings (2000 resamples, 95%, seed 0), and retrain.gate.evaluate_gate end to end (every
criterion, on a metrics dict shaped like metrics.json after json.loads: per-example lists),
on 10k, 100k and 1M synthetic paired predictions (1M in full mode only): 77 classes, seeded,
challenger ~90% and champion ~89% accurate with independent errors, the worst case for the
vectorised bootstrap (most distinct (true, challenger, champion) triples). Time is the
median of repeats; peak memory is tracemalloc's peak (numpy buffers included) in a separate,
untimed call.
Baseline (same run): a naive bootstrap loop (index resampling + np.bincount per resample)
on the same sets with fewer resamples (100 at 10k, scaled down with n, at least 5),
extrapolated per resample to 2000; reported as the vectorised version's speedup.
Target: 100k in at most 2 s, and growth no worse than linear: the exponent k of
t ~ n^k between the smallest and the largest size at most 1.1 (0.1 allows for noise).
Time per 100k examples is reported for each size.
"""

from __future__ import annotations

import math
import time
import tracemalloc
from pathlib import Path

import numpy as np

from common import log, median, row, timed

CLASSES = 77
TARGET_100K_S = 2.0
TARGET_EXPONENT = 1.1


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)

    def predictions(accuracy: float) -> np.ndarray:
        wrong = rng.random(n) > accuracy
        pred = y.copy()
        pred[wrong] = (y[wrong] + rng.integers(1, CLASSES, wrong.sum())) % CLASSES  # any other class
        return pred

    return y, predictions(0.90), predictions(0.89)


def per_class(y: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict:
    tp = np.bincount(y[y == pred], minlength=CLASSES)
    true, predicted = np.bincount(y, minlength=CLASSES), np.bincount(pred, minlength=CLASSES)
    f1 = np.divide(2 * tp, true + predicted, out=np.zeros(CLASSES), where=(true + predicted) > 0)
    return {label: {"f1": float(f1[i]), "support": int(true[i])} for i, label in enumerate(labels)}


def metrics_dict(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict:
    """What evaluate_gate reads from metrics.json, with per-example lists as json.loads gives them."""
    labels = [f"class_{i}" for i in range(CLASSES)]

    def block(pred: np.ndarray, version: int | None) -> dict:
        classes = per_class(y, pred, labels)
        return {
            "macro_f1": float(np.mean([c["f1"] for c in classes.values()])),
            "accuracy": float(np.mean(y == pred)),
            "latency_ms": {"p50": 5.0, "p99": 20.0},
            "per_class": classes,
            "version": version,
        }

    return {
        "n_examples": len(y),
        "golden_version": "bench",
        "labels": labels,
        "challenger": block(a, None),
        "champion": block(b, 1),
        "paired": {
            "y_true": y.tolist(),
            "challenger_pred": a.tolist(),
            "champion_pred": b.tolist(),
            "challenger_correct": (a == y).tolist(),
            "champion_correct": (b == y).tolist(),
        },
    }


def naive_bootstrap(y: np.ndarray, a: np.ndarray, b: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The textbook loop: resample indices, recount, recompute both macro F1s."""
    rng, n, diffs = np.random.default_rng(seed), len(y), np.empty(resamples)
    for r in range(resamples):
        idx = rng.integers(0, n, n)
        yy, f1 = y[idx], []
        true = np.bincount(yy, minlength=CLASSES)
        for pred in (a[idx], b[idx]):
            tp, predicted = np.bincount(yy[yy == pred], minlength=CLASSES), np.bincount(pred, minlength=CLASSES)
            f1.append(np.mean(np.divide(2 * tp, true + predicted, out=np.zeros(CLASSES), where=(true + predicted) > 0)))
        diffs[r] = f1[0] - f1[1]
    return diffs


def traced_peak_mb(fn) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def run(quick: bool, work: Path) -> dict:
    from retrain.config import load_model
    from retrain.gate import evaluate_gate, paired_bootstrap_macro_f1

    policy = load_model("intent").gate
    sig = policy.significance
    sizes, reps, naive_resamples = ([10_000, 100_000], 3, 100) if quick else ([10_000, 100_000, 1_000_000], 5, 300)
    results = {}
    for n in sizes:
        y, a, b = synthetic(n, seed=n)
        metrics = metrics_dict(y, a, b)

        def boot(y=y, a=a, b=b):
            return paired_bootstrap_macro_f1(y, a, b, CLASSES, sig.resamples, sig.confidence, sig.seed)

        def gate(metrics=metrics):
            return evaluate_gate(policy, metrics)

        boot_s = [timed(boot)[0] for _ in range(reps)]
        gate_s = [timed(gate)[0] for _ in range(reps)]
        triples = len(np.unique(np.stack([y, a, b], axis=1), axis=0))
        results[n] = {
            "bootstrap_s": boot_s,
            "gate_s": gate_s,
            "bootstrap_median_s": median(boot_s),
            "gate_median_s": median(gate_s),
            "bootstrap_peak_mb": traced_peak_mb(boot),
            "gate_peak_mb": traced_peak_mb(gate),
            "distinct_triples": triples,
        }
        log(
            f"{n:>9,} examples: bootstrap {median(boot_s):.3f}s, evaluate_gate {median(gate_s):.3f}s, "
            f"peak {results[n]['bootstrap_peak_mb']:.0f} MB, {triples:,} distinct triples"
        )

    for n in sizes:  # the naive loop grows with n x resamples: fewer resamples on larger sets, extrapolated
        y, a, b = synthetic(n, seed=n)
        resamples = max(5, naive_resamples * sizes[0] // n)
        started = time.perf_counter()
        naive_bootstrap(y, a, b, resamples, seed=0)
        results[n]["naive_resamples"] = resamples
        results[n]["naive_extrapolated_s"] = (time.perf_counter() - started) / resamples * sig.resamples
        results[n]["speedup"] = results[n]["naive_extrapolated_s"] / results[n]["bootstrap_median_s"]
        log(
            f"naive loop on {n:,}: {results[n]['naive_extrapolated_s']:.2f}s per {sig.resamples} resamples "
            f"(extrapolated from {resamples}); vectorised is {results[n]['speedup']:.1f}x faster"
        )

    small, large = sizes[0], sizes[-1]
    exponent = math.log(results[large]["bootstrap_median_s"] / results[small]["bootstrap_median_s"]) / math.log(
        large / small
    )
    rows = []
    for n in sizes:
        r = results[n]
        per_100k = r["bootstrap_median_s"] / (n / 100_000)
        target = (
            dict(target=f"≤ {TARGET_100K_S:g} s", met=r["bootstrap_median_s"] <= TARGET_100K_S) if n == 100_000 else {}
        )
        extra = dict(
            baseline=f"naive loop: {r['naive_extrapolated_s']:.2f} s (extrapolated from {r['naive_resamples']} "
            "resamples)",
            ratio=f"{r['speedup']:.1f}x faster",
        )
        rows.append(
            row(
                "Gate",
                f"paired bootstrap, {n:,} examples, {sig.resamples} resamples ({per_100k:.3f} s per 100k; "
                f"peak {r['bootstrap_peak_mb']:.0f} MB)",
                round(r["bootstrap_median_s"], 3),
                "s",
                reps,
                **extra,
                **target,
            )
        )
    for n in sizes:
        r = results[n]
        rows.append(
            row(
                "Gate",
                f"evaluate_gate end to end, {n:,} examples (peak {r['gate_peak_mb']:.0f} MB)",
                round(r["gate_median_s"], 3),
                "s",
                reps,
            )
        )
    rows.append(
        row(
            "Gate",
            f"bootstrap growth exponent k (t ~ n^k, {small:,} to {large:,})",
            round(exponent, 2),
            "",
            reps,
            target=f"≤ {TARGET_EXPONENT} (linear)",
            met=exponent <= TARGET_EXPONENT,
        )
    )
    return {
        "rows": rows,
        "details": {
            "sizes": sizes,
            "reps": reps,
            "classes": CLASSES,
            "resamples": sig.resamples,
            "by_size": {str(n): r for n, r in results.items()},
            "growth_exponent": exponent,
        },
    }
