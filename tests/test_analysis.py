"""Tests for grouping run results into summary statistics."""

import math

import numpy as np

from ncjax import analysis


def test_mean_and_std_by_groups():
    rows = [
        {"optimizer": "adam", "weight_decay": 0.0, "nc0": 1.0},
        {"optimizer": "adam", "weight_decay": 0.0, "nc0": 3.0},
        {"optimizer": "adam", "weight_decay": 0.1, "nc0": 5.0},
        {"optimizer": "adamw", "weight_decay": 0.1, "nc0": None},
        {"optimizer": "adamw", "weight_decay": 0.1, "nc0": float("nan")},
    ]
    summary = analysis.mean_and_std_by(rows, ("optimizer", "weight_decay"), ("nc0",))
    assert list(summary) == [("adam", 0.0), ("adam", 0.1), ("adamw", 0.1)]
    mean, std, count = summary[("adam", 0.0)]["nc0"]
    assert mean == 2.0
    np.testing.assert_allclose(std, np.std([1.0, 3.0], ddof=1), rtol=1e-15)
    assert count == 2
    assert summary[("adam", 0.1)]["nc0"] == (5.0, 0.0, 1)
    mean, std, count = summary[("adamw", 0.1)]["nc0"]
    assert math.isnan(mean)
    assert count == 0
