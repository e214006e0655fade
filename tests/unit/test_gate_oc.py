"""The gate operating-characteristics simulation (bench/gate_oc.py): seeded, and its A/A pairs are of equal quality."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from retrain.config import GatePolicy

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "bench"))
import gate_oc  # noqa: E402

SMALL = gate_oc.GoldenSet("20 x 30", 20, 30)
POLICY = GatePolicy(
    min_total_examples=100,
    min_class_support=20,
    per_class_floor=0.5,
    per_class_max_regression=0.1,
    min_delta={"macro_f1": -0.01},
    significance={"resamples": 1000},
)


@pytest.mark.parametrize("worse", ["", "overall", "class"])
def test_simulation_is_reproducible_with_a_seed(worse):
    first = gate_oc.simulate(POLICY, SMALL, 0.9, worse, 0.3, draws=4, seed=11)
    again = gate_oc.simulate(POLICY, SMALL, 0.9, worse, 0.3, draws=4, seed=11)
    assert first == again
    other = gate_oc.simulate(POLICY, SMALL, 0.9, worse, 0.3, draws=4, seed=12)
    assert other["mean_delta_macro_f1"] != first["mean_delta_macro_f1"]


def test_a_a_pairs_are_of_equal_quality():
    """Champion and challenger are exchangeable: macro F1 differences average out to zero."""
    rng = np.random.default_rng(0)
    deltas = []
    for _ in range(300):
        y, a, b = gate_oc.pair(rng, SMALL, 0.5, "", 0.0)
        deltas.append(gate_oc.per_class_f1(y, a, 20).mean() - gate_oc.per_class_f1(y, b, 20).mean())
    deltas = np.array(deltas)
    assert abs(deltas.mean()) < 3 * deltas.std() / np.sqrt(len(deltas))


def test_worse_challengers_are_worse_where_asked():
    rng = np.random.default_rng(1)
    y, a, b = gate_oc.pair(rng, SMALL, 0.9, "class", 0.5)
    assert np.all(a[y != 0] == np.where(a[y != 0] == b[y != 0], b[y != 0], a[y != 0]))
    assert np.sum((a == y) & (y == 0)) < np.sum((b == y) & (y == 0))
    assert np.sum(y == 0) == gate_oc.CLASS_DROP_SUPPORT


def test_wilson_interval():
    low, high = gate_oc.wilson(5, 100)
    assert low < 0.05 < high and low == pytest.approx(0.0215, abs=1e-3) and high == pytest.approx(0.1118, abs=1e-3)
