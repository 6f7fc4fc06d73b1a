"""Class balancing of a training part."""
from __future__ import annotations

import numpy as np
import pytest

from mammo_core.balance import balanced, class_weights, resample_index

LABELS = np.array([0] * 30 + [1] * 10)


def test_class_weights_give_every_class_the_same_total():
    weights = class_weights(LABELS)
    assert weights[0] * 30 == pytest.approx(weights[1] * 10) == pytest.approx(20)


def test_oversampling_keeps_every_row_and_repeats_the_minority():
    index = resample_index(LABELS, "oversample", seed=0)
    assert np.bincount(LABELS[index]).tolist() == [30, 30]
    assert set(index.tolist()) == set(range(40))


def test_undersampling_draws_the_majority_down_without_repeats():
    index = resample_index(LABELS, "undersample", seed=0)
    assert np.bincount(LABELS[index]).tolist() == [10, 10]
    assert len(set(index.tolist())) == 20


def test_balancing_is_seeded_and_none_changes_nothing():
    images = np.arange(40, dtype=np.float32)[:, None]
    a, b = balanced(images, LABELS, "oversample", 3), balanced(images, LABELS, "oversample", 3)
    np.testing.assert_array_equal(a[0], b[0])
    x, y, weights = balanced(images, LABELS, "none", 0)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, LABELS)
    assert weights is None and balanced(images, LABELS, "class_weight", 0)[2] is not None


def test_five_classes_are_balanced_too():
    labels = np.repeat(np.arange(5), [5, 10, 15, 20, 25])
    assert np.bincount(labels[resample_index(labels, "oversample", 0)]).tolist() == [25] * 5


def test_an_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown class balancing"):
        resample_index(LABELS, "smote", 0)
