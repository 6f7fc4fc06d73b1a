"""The fold plan every search, baseline and registry step reads.

Two protocols (`split.protocol`):

- grouped (the default): first a grouped, stratified ensemble hold-out (no expert ever
  trains on it), then `n_folds` outer folds over the remaining images with
  StratifiedGroupKFold, and inside each fold's development part an inner grouped
  validation part for model selection.
- published: the collection's own test partition is every expert's test set, as the
  publications scored; the hold-out comes from the training partition, and each expert
  validates on one of `n_folds` grouped parts of the rest (5 folds: the 20 % the
  documents held out). Cases or pixels the published partition shares between its two
  sides are kept, and counted (`published_leaks`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from mammo_core.config import CrossValidationConfig, SplitConfig
from mammo_core.dataset import Dataset
from mammo_core.ensemble import cross_fit_parts
from mammo_core.errors import DataError
from mammo_core.splits import assert_disjoint, holdout_split, leakage_groups


@dataclass(frozen=True)
class Fold:
    """Index arrays into the data set: train + val = the fold's development part."""

    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class FoldPlan:
    holdout: np.ndarray
    folds: tuple[Fold, ...]
    groups: np.ndarray
    group_by: str
    seed: int
    data_fingerprint: str
    protocol: str = "grouped"

    def same_parts(self, other: FoldPlan) -> bool:
        """Whether both plans put every image in the same part of the same fold."""
        def parts(plan: FoldPlan) -> list[list[int]]:
            return [plan.holdout.tolist()] + [index.tolist() for f in plan.folds
                                              for index in (f.train, f.val, f.test)]
        return parts(self) == parts(other)

    def to_json(self, paths: tuple[str, ...]) -> str:
        """Returns the plan as JSON, with file names so it can be audited by hand."""
        return json.dumps({
            "protocol": self.protocol, "group_by": self.group_by, "seed": self.seed,
            "data_fingerprint": self.data_fingerprint,
            "files": [p.rsplit("/", 1)[-1] for p in paths],
            "groups": self.groups.tolist(), "holdout": self.holdout.tolist(),
            "folds": [{"index": f.index, "train": f.train.tolist(), "val": f.val.tolist(),
                       "test": f.test.tolist()} for f in self.folds]}, indent=1)

    @classmethod
    def from_json(cls, text: str, dataset: Dataset) -> FoldPlan:
        """Returns the plan stored in `text`; raises DataError if made for other data."""
        raw = json.loads(text)
        if raw["data_fingerprint"] != dataset.fingerprint():
            raise DataError(f"fold plan was made for data {raw['data_fingerprint']}, "
                            f"this data set is {dataset.fingerprint()}")
        folds = tuple(Fold(f["index"], np.array(f["train"]), np.array(f["val"]),
                           np.array(f["test"])) for f in raw["folds"])
        return cls(np.array(raw["holdout"]), folds, np.array(raw["groups"]),
                   raw["group_by"], raw["seed"], raw["data_fingerprint"],
                   raw.get("protocol", "grouped"))


def check_plan(plan: FoldPlan, labels: np.ndarray, cross_fit_folds: int, seed: int) -> None:
    """Raises DataError, before anything trains, when a part of the plan would hold a
    single class: an outer fold's train, validation or test part, the hold-out, or a
    part the register step fits ensemble weights on (`registry.cross_fit_folds` grouped
    parts of the hold-out). The message says what to change."""
    parts = {"the hold-out": plan.holdout}
    for fold in plan.folds:
        parts |= {f"fold {fold.index}'s {name} part": index for name, index in
                  (("training", fold.train), ("validation", fold.val), ("test", fold.test))}
    fit_parts = cross_fit_parts(labels[plan.holdout], plan.groups[plan.holdout],
                                cross_fit_folds, seed)
    parts |= {f"cross-fitting part {k} of the hold-out": plan.holdout[fit]
              for k, (fit, _) in enumerate(fit_parts)}
    for name, index in parts.items():
        held = np.unique(labels[index])
        if len(held) < 2:
            raise DataError(
                f"{name} would hold {len(index)} images of one class ({held.tolist()}): "
                f"{_group_counts(labels, plan.groups)} are too few for "
                f"{len(plan.folds)} folds, its hold-out and {cross_fit_folds} cross-fitting "
                "parts; lower 'cross_validation.n_folds' or 'registry.cross_fit_folds', or "
                "add data")


def _group_counts(labels: np.ndarray, groups: np.ndarray) -> str:
    """Returns "12 groups of class 0, 7 of class 1"."""
    return ", ".join(f"{len(np.unique(groups[labels == c]))} groups of class {c}"
                     for c in np.unique(labels).tolist())


def make_fold_plan(dataset: Dataset, split: SplitConfig,
                   cv: CrossValidationConfig) -> FoldPlan:
    """Returns the seeded, reproducible fold plan for `dataset`.

    No group (case or ROI, joined with pixel duplicates) is ever on two sides of any
    boundary: hold-out vs folds, test vs development, train vs val; under the published
    protocol, except the one the publication drew (see `published_plan`).
    """
    if split.protocol == "published":
        return published_plan(dataset, split, cv)
    groups = leakage_groups(dataset, split.group_by)
    rest, holdout = holdout_split(dataset.labels, groups, cv.holdout_fraction, split.seed)
    outer = StratifiedGroupKFold(n_splits=cv.n_folds, shuffle=True, random_state=split.seed)
    folds = []
    for k, (dev, test) in enumerate(outer.split(rest, dataset.labels[rest], groups[rest])):
        dev, test = rest[dev], rest[test]
        train, val = holdout_split(dataset.labels[dev], groups[dev], cv.inner_val_fraction,
                                   split.seed + 1 + k)
        fold = Fold(k, dev[train], dev[val], test)
        assert_disjoint({"holdout": holdout, "train": fold.train, "val": fold.val,
                         "test": fold.test}, groups)
        folds.append(fold)
    return FoldPlan(holdout, tuple(folds), groups, split.group_by, split.seed,
                    dataset.fingerprint())


def published_plan(dataset: Dataset, split: SplitConfig, cv: CrossValidationConfig) -> FoldPlan:
    """Returns the published protocol's plan: the test side (`published_test_side`) is
    every fold's test part; the training side gives the grouped hold-out, then `n_folds`
    grouped parts, each fold validating on one and training on the others."""
    groups = leakage_groups(dataset, split.group_by)
    test = np.flatnonzero(published_test_side(dataset, split))
    training = np.setdiff1d(np.arange(len(dataset.labels)), test)
    kept, held = holdout_split(dataset.labels[training], groups[training],
                               cv.holdout_fraction, split.seed)
    rest, holdout = training[kept], training[held]
    parts = StratifiedGroupKFold(n_splits=cv.n_folds, shuffle=True, random_state=split.seed)
    folds = []
    for k, (train, val) in enumerate(parts.split(rest, dataset.labels[rest], groups[rest])):
        fold = Fold(k, rest[train], rest[val], test)
        assert_disjoint({"holdout": holdout, "train": fold.train, "val": fold.val}, groups)
        folds.append(fold)
    return FoldPlan(holdout, tuple(folds), groups, split.group_by, split.seed,
                    dataset.fingerprint(), "published")


def published_test_side(dataset: Dataset, split: SplitConfig) -> np.ndarray:
    """Returns a mask of the images on the published test side: the partitions named in
    `split.test_partitions` (null: those whose name holds "test"), or, for a collection
    stored without partitions, an image-level random split of `published_test_fraction`
    stratified by label. Raises DataError naming the partitions found otherwise.

    A partition is what the reader recorded (microcal's Train/Test, the NumPy release's
    file prefix); where it recorded one for all, each image's folder (CBIS' class folders
    mass_train, mass_test, ... hold partition and class in one name).
    """
    partitions = dataset.partitions.astype(str)
    if len(set(partitions.tolist())) == 1:
        partitions = np.array([Path(path).parent.name for path in dataset.paths])
    if split.test_partitions is None:
        mask = np.char.find(np.char.lower(partitions), "test") >= 0
    else:
        mask = np.isin(partitions, split.test_partitions)
    if mask.any() and not mask.all():
        return mask
    if split.published_test_fraction is not None and not mask.any():
        _, test = train_test_split(np.arange(len(partitions)),
                                   test_size=split.published_test_fraction,
                                   random_state=split.seed, stratify=dataset.labels)
        return np.isin(np.arange(len(partitions)), test)
    found = sorted(set(partitions.tolist()))
    raise DataError(
        f"split.protocol 'published' needs a test partition beside a training one; this "
        f"collection has the partitions {found}"
        + (f", none of them named {list(split.test_partitions)}" if split.test_partitions
           else "") + ": name the test side in split.test_partitions, or, for a collection "
        "stored without partitions, set split.published_test_fraction")


def published_leaks(dataset: Dataset, plan: FoldPlan) -> dict[str, int]:
    """Returns how many test images of a published plan share something with its
    training side (folds and hold-out): a case, an ROI, or their exact pixels. Zero
    under the grouped protocol by construction."""
    test = plan.folds[0].test
    training = np.setdiff1d(np.arange(len(dataset.labels)), test)
    keys = {"case": dataset.cases, "roi": dataset.rois, "pixels": dataset.duplicate_groups}
    return {f"published_test_images_sharing_{name}": int(np.isin(values[test],
                                                                   values[training]).sum())
            for name, values in keys.items()} | {"published_test_images": len(test)}


def leak_line(leaks: dict[str, int]) -> str:
    """Returns the one line a run prints about a published partition's leak."""
    return (f"published protocol: {leaks['published_test_images']} test images; "
            f"{leaks['published_test_images_sharing_case']} share a case with the training "
            f"side, {leaks['published_test_images_sharing_roi']} an ROI, "
            f"{leaks['published_test_images_sharing_pixels']} are pixel-identical to a "
            "training image (figures under this protocol include that leak)")
