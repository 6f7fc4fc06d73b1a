import numpy as np
from sklearn.metrics import roc_auc_score

from mammo_core.baselines import (FEATURE_NAMES, intensity_features, logistic_baseline,
                                  max_pixel_scores)


def spotted(n, seed, spot):
    rng = np.random.default_rng(seed)
    images = (rng.random((n, 20, 20)) * 100).astype(np.uint8)
    if spot:
        images[:, 10, 10] = 250
    return images


def test_max_pixel_and_features():
    images = spotted(4, 0, True)
    np.testing.assert_array_equal(max_pixel_scores(images), [250] * 4)
    features = intensity_features(images)
    assert features.shape == (4, len(FEATURE_NAMES))
    assert np.all(np.isfinite(features))


def test_logistic_baseline_separates_bright_spots():
    train = np.concatenate([spotted(20, 1, False), spotted(20, 2, True)])
    labels = np.array([0] * 20 + [1] * 20)
    test = np.concatenate([spotted(10, 3, False), spotted(10, 4, True)])
    probabilities = logistic_baseline(train, labels, test)
    assert roc_auc_score([0] * 10 + [1] * 10, probabilities) > 0.95


def test_pairs_get_the_features_of_both_patches():
    from mammo_core.baselines import intensity_features

    rng = np.random.default_rng(0)
    pairs = rng.random((5, 2, 20, 20))
    features = intensity_features(pairs)
    assert features.shape == (5, 16)
    np.testing.assert_allclose(features[:, 8:], intensity_features(pairs[:, 1]))
