"""Class balancing of a training part: loss weights, over-sampling or under-sampling.

Only ever applied to the part a model trains on: validation and test parts keep their
true class mix, so their metrics mean what they say.
"""
from __future__ import annotations

import numpy as np

METHODS = ("none", "class_weight", "oversample", "undersample")


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Returns {label: n / (classes * count)}: every class carries the same total weight."""
    values, counts = np.unique(labels, return_counts=True)
    return {int(v): float(len(labels) / (len(values) * c)) for v, c in zip(values, counts)}


def resample_index(labels: np.ndarray, method: str, seed: int) -> np.ndarray:
    """Returns row indices giving every class the same count (shuffled).

    oversample: each class drawn with replacement up to the largest class (all of its
    rows kept once first); undersample: each class drawn without replacement down to the
    smallest; none / class_weight: every row once, in order.
    """
    if method in ("none", "class_weight"):
        return np.arange(len(labels))
    if method not in METHODS:
        raise ValueError(f"unknown class balancing {method!r} (known: {', '.join(METHODS)})")
    rng = np.random.default_rng(seed)
    rows = [np.flatnonzero(labels == v) for v in np.unique(labels)]
    target = (max if method == "oversample" else min)(len(r) for r in rows)
    picked = []
    for r in rows:
        if method == "oversample":
            extra = rng.choice(r, size=target - len(r), replace=True)
            picked.append(np.concatenate([r, extra]))
        else:
            picked.append(rng.choice(r, size=target, replace=False))
    return rng.permutation(np.concatenate(picked))


def balanced(images: np.ndarray, labels: np.ndarray, method: str,
             seed: int) -> tuple[np.ndarray, np.ndarray, dict[int, float] | None]:
    """Returns (images, labels, class_weight for Keras' fit or None) balanced by `method`."""
    index = resample_index(labels, method, seed)
    weights = class_weights(labels) if method == "class_weight" else None
    return images[index], labels[index], weights
