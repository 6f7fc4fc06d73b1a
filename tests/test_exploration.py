"""The data exploration figures and the label counts per fold part."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from mammo_core.exploration import (examples_figure, fold_counts_figure, histogram_figure,
                                    label_counts, plan_parts)
from mammo_core.folds import Fold, FoldPlan

RNG = np.random.default_rng(0)
IMAGES = RNG.random((20, 16, 16)).astype(np.float32)
LABELS = np.array([0] * 12 + [1] * 8)
NAMES = {0: "normal", 1: "abnormal"}


def test_examples_show_one_row_per_class_even_when_a_class_is_small():
    fig = examples_figure(IMAGES, LABELS, NAMES, per_class=10)
    assert isinstance(fig, Figure) and len(fig.axes) == 20
    assert sum(bool(ax.images) for ax in fig.axes) == 10 + 8


def test_histogram_has_one_curve_per_class():
    fig = histogram_figure(IMAGES, LABELS, NAMES)
    assert [t.get_text().split(" (")[0] for t in fig.axes[0].get_legend().get_texts()] == [
        "normal", "abnormal"]


def test_label_counts_per_fold_part():
    plan = FoldPlan(np.array([0, 12]), (Fold(0, np.arange(1, 8), np.array([8, 13]),
                                             np.arange(14, 20)),), np.arange(20), "case", 0, "x")
    rows = label_counts(plan_parts(plan), LABELS)
    assert rows[0] == {"part": "holdout", "0": 1, "1": 1}
    assert rows[1] == {"part": "fold0/train", "0": 7, "1": 0}
    assert rows[3] == {"part": "fold0/test", "0": 0, "1": 6}
    assert isinstance(fold_counts_figure(rows, NAMES), Figure)


def test_pairs_are_shown_side_by_side():
    pairs = RNG.random((6, 2, 16, 16)).astype(np.float32)
    fig = examples_figure(pairs, np.array([0, 1] * 3), NAMES, per_class=3)
    assert fig.axes[0].images[0].get_array().shape == (16, 32)


def test_filtered_examples_show_the_same_patches_scaled_to_their_own_range():
    signed = (IMAGES - 0.5)[..., None] * 0.01  # a filter's small signed output, (N, H, W, 1)
    raw = examples_figure(IMAGES, LABELS, NAMES, per_class=3, seed=5)
    filtered = examples_figure(signed, LABELS, NAMES, per_class=3, seed=5, filtered=True)
    for a, b in zip(raw.axes, filtered.axes):
        np.testing.assert_allclose(b.images[0].get_array(), (a.images[0].get_array() - 0.5) * 0.01,
                                   atol=1e-7)
        assert b.images[0].get_clim() != (0, 1)


def test_label_counts_of_any_named_parts():
    rows = label_counts({"train": np.arange(10), "test": np.arange(10, 20)}, LABELS)
    assert rows == [{"part": "train", "0": 10, "1": 0}, {"part": "test", "0": 2, "1": 8}]
