"""Simplex weights, thresholds and cross-fitting of the fold-expert ensemble."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import StratifiedGroupKFold

from mammo_core.config import RegistryConfig
from mammo_core.ensemble import Ensemble, choose_threshold, cross_fit, fit_ensemble, fit_weights


def experts(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (expert probabilities: informative, noise, weakly informative; labels; groups)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    good = np.clip(0.25 + 0.5 * labels + rng.normal(0, 0.12, n), 0.01, 0.99)
    noise = rng.uniform(0.01, 0.99, n)
    weak = np.clip(0.4 + 0.2 * labels + rng.normal(0, 0.2, n), 0.01, 0.99)
    return np.stack([good, noise, weak], axis=1), labels, np.arange(n) // 4


def test_weights_lie_on_the_simplex_and_favour_the_informative_expert():
    p, y, _ = experts()
    w = fit_weights(p, y)
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    assert w[0] > 0.7 and w[1] < 0.05


def test_equal_experts_keep_equal_weights():
    p, y, _ = experts()
    w = fit_weights(np.repeat(p[:, :1], 3, axis=1), y)
    np.testing.assert_allclose(w, [1 / 3] * 3, atol=1e-6)


def test_threshold_rules():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    assert choose_threshold(y, p, RegistryConfig(threshold="fixed", fixed_threshold=0.3)) == 0.3
    assert choose_threshold(y, p, RegistryConfig(threshold="youden")) == pytest.approx(0.7)
    t = choose_threshold(y, p, RegistryConfig(threshold="sensitivity", target_sensitivity=1.0))
    assert t == pytest.approx(0.4) and np.mean(p[y == 1] >= t) == 1.0


def test_best_single_picks_the_expert_with_the_best_auc():
    p, y, _ = experts()
    ensemble = fit_ensemble(p, y, "best_single", RegistryConfig())
    np.testing.assert_array_equal(ensemble.weights, [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="unknown ensemble method"):
        fit_ensemble(p, y, "median", RegistryConfig())


def test_cross_fit_scores_each_part_with_a_fit_that_never_saw_it():
    p, y, groups = experts()
    config = RegistryConfig(cross_fit_folds=4)
    probabilities, thresholds = cross_fit(p, y, groups, "learned", config, seed=3)
    splitter = StratifiedGroupKFold(n_splits=4, shuffle=True, random_state=3)
    for fit_part, score_part in splitter.split(p, y, groups):
        assert not set(groups[fit_part]) & set(groups[score_part])
        expected = fit_ensemble(p[fit_part], y[fit_part], "learned", config)
        np.testing.assert_allclose(probabilities[score_part], expected.combine(p[score_part]))
        assert np.all(thresholds[score_part] == expected.threshold)


def test_ensemble_round_trips_through_a_dict():
    ensemble = Ensemble(np.array([0.25, 0.75]), 0.4)
    again = Ensemble.from_dict(ensemble.to_dict())
    np.testing.assert_array_equal(again.weights, ensemble.weights)
    assert again.threshold == 0.4
    np.testing.assert_allclose(again.combine(np.array([[0.2, 0.6]])), [0.5])


def three_class_experts(n: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Returns (expert probabilities (N, 2 experts, 3 classes): one informative, one noise;
    labels)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    good = np.full((n, 3), 0.1) + 0.7 * np.eye(3)[labels] + rng.uniform(0, 0.1, (n, 3))
    noise = rng.dirichlet(np.ones(3), n)
    stack = np.stack([good / good.sum(axis=1, keepdims=True), noise], axis=1)
    return stack, labels


def test_several_classes_weight_experts_on_probability_vectors():
    p, labels = three_class_experts()
    weights = fit_weights(p, labels)
    assert weights[0] > 0.9 and weights.sum() == pytest.approx(1)
    ensemble = fit_ensemble(p, labels, "learned", RegistryConfig())
    combined = ensemble.combine(p)
    assert combined.shape == (150, 3)
    np.testing.assert_allclose(combined.sum(axis=1), 1)
    assert (ensemble.labels(combined) == labels).mean() > 0.95  # most probable class
    probabilities, thresholds = cross_fit(p, labels, np.arange(150) // 3, "best_single",
                                          RegistryConfig())
    assert probabilities.shape == (150, 3) and thresholds.shape == (150,)
