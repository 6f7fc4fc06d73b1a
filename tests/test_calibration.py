"""Platt scaling and the bootstrap interval of a threshold."""
from __future__ import annotations

import numpy as np
import pytest

from mammo_core.calibration import Calibration, bootstrap_interval, fit_platt
from mammo_core.metrics import expected_calibration_error


def overconfident(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities pushed to the extremes (true ones: sigmoid(z))."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return labels, 1 / (1 + np.exp(-3 * z + 1))


def test_platt_scaling_calibrates_and_keeps_the_ranking():
    labels, p = overconfident()
    calibration = fit_platt(labels, p)
    fixed = calibration.apply(p)
    assert expected_calibration_error(labels, fixed) < 0.5 * expected_calibration_error(labels, p)
    assert np.all(np.diff(fixed[np.argsort(p)]) >= 0)  # monotone: the same ranking
    assert calibration.slope == pytest.approx(1 / 3, abs=0.1)
    assert Calibration.from_dict(calibration.to_dict()) == calibration


def test_identity_by_default_and_for_a_reversed_fit():
    p = np.linspace(0.05, 0.95, 10)
    np.testing.assert_array_equal(Calibration().apply(p), p)
    assert fit_platt(np.arange(10) >= 5, p[::-1]) == Calibration()  # would flip the ranking


def test_ece_of_a_calibrated_and_a_miscalibrated_scorer():
    assert expected_calibration_error(np.array([0, 1] * 50), np.full(100, 0.5)) == 0
    assert expected_calibration_error(np.zeros(10), np.full(10, 0.9)) == pytest.approx(0.9)


def test_the_threshold_interval_brackets_the_threshold():
    labels, p = overconfident()

    def rule(y, q):
        return float(np.median(q[y == 1]))

    low, high = bootstrap_interval(labels, p, rule, rounds=100)
    assert low < rule(labels, p) < high
