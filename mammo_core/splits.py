"""Leakage-free splits: grouped by case (or ROI), duplicates always on one side.

A group is a connected component of "same grouping key" and "same pixels" links, so an
image stored twice under two case numbers pulls both cases onto the same side.
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from mammo_core.config import SplitConfig
from mammo_core.dataset import Dataset
from mammo_core.errors import DataError


def leakage_groups(dataset: Dataset, group_by: str) -> np.ndarray:
    """Returns a group id per image: images that must never be split apart share one.

    group_by: "case", "roi", or "none" (image-level, only to show how leakage inflates
    scores); duplicate images are joined in every mode.
    """
    n = len(dataset.labels)
    keys = {"case": dataset.cases, "roi": dataset.rois, "none": np.arange(n)}[group_by]
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for links in (keys, dataset.duplicate_groups):
        first_seen: dict = {}
        for i, key in enumerate(links.tolist()):
            j = first_seen.setdefault(key, i)
            parent[find(i)] = find(j)
    roots = [find(i) for i in range(n)]
    _, ids = np.unique(roots, return_inverse=True)
    return ids


def holdout_split(labels: np.ndarray, groups: np.ndarray, fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (kept, held-out) index arrays; about `fraction` of the groups are held out.

    Stratified by label as far as whole groups allow; the held-out share is
    1 / round(1 / fraction) (0.2 -> 1/5, 0.25 -> 1/4).
    """
    n_splits = max(2, round(1 / fraction))
    if len(np.unique(groups)) < n_splits:
        raise DataError(f"{len(np.unique(groups))} groups are too few to hold out "
                        f"1/{n_splits} of them; use more data or a larger fraction")
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    kept, held = next(folds.split(np.zeros(len(labels)), labels, groups))
    return kept, held


def train_val_test_split(labels: np.ndarray, groups: np.ndarray,
                         config: SplitConfig) -> dict[str, np.ndarray]:
    """Returns index arrays {"train", "val", "test"}: no group appears in two of them."""
    development, test = holdout_split(labels, groups, config.test_fraction, config.seed)
    train, val = holdout_split(labels[development], groups[development],
                               config.val_fraction, config.seed + 1)
    parts = {"train": development[train], "val": development[val], "test": test}
    assert_disjoint(parts, groups)
    return parts


def assert_disjoint(parts: dict[str, np.ndarray], groups: np.ndarray) -> None:
    """Raises AssertionError if any group has images in two parts."""
    seen: dict[int, str] = {}
    for name, index in parts.items():
        for group in np.unique(groups[index]).tolist():
            if seen.setdefault(group, name) != name:
                raise AssertionError(f"group {group} is in both {seen[group]} and {name}")


def describe(parts: dict[str, np.ndarray], labels: np.ndarray,
             groups: np.ndarray) -> dict[str, dict[str, int]]:
    """Returns per part the number of images, positives and groups (for logging)."""
    return {name: {"images": len(index), "positives": int(labels[index].sum()),
                   "groups": len(np.unique(groups[index]))}
            for name, index in parts.items()}
