"""A first look at a study's data: example images, pixel histograms, labels per fold part.

Figures are matplotlib Figures and tables plain rows; logging them is the caller's job.
"""
from __future__ import annotations

from typing import Mapping

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mammo_core.folds import FoldPlan  # noqa: E402
from mammo_core.metrics import side_by_side  # noqa: E402

_BINS = 50


def examples_figure(images: np.ndarray, labels: np.ndarray, class_names: Mapping[int, str],
                    per_class: int = 8, seed: int = 0, filtered: bool = False) -> Figure:
    """Returns a grid with one row per class of `per_class` random example images (pairs
    of patches side by side, baseline left). The same `seed` picks the same images, so
    the raw grid and the `filtered` one (preprocessed, signed values: each image scaled
    to its own range) show the same patches."""
    rng = np.random.default_rng(seed)
    classes = sorted(set(labels.tolist()))
    fig, axes = plt.subplots(len(classes), per_class, squeeze=False,
                             figsize=(1.5 * per_class, 1.7 * len(classes) + 0.4))
    scale = {} if filtered else {"vmin": 0, "vmax": 1}
    for row, label in enumerate(classes):
        rows = np.flatnonzero(labels == label)
        picked = rng.choice(rows, size=min(per_class, len(rows)), replace=False)
        for col, ax in enumerate(axes[row]):
            ax.set(xticks=[], yticks=[])
            if col < len(picked):
                ax.imshow(side_by_side(images[picked[col]]), cmap="gray", **scale)
        axes[row, 0].set_ylabel(f"{class_names.get(label, label)}\n(n={len(rows)})", fontsize=8)
    fig.suptitle("Example images per class, after the preprocessing (each image to its own "
                 "range)" if filtered else "Example images per class (intensities in [0, 1])",
                 fontsize=10)
    fig.tight_layout()
    return fig


def histogram_figure(images: np.ndarray, labels: np.ndarray,
                     class_names: Mapping[int, str]) -> Figure:
    """Returns each class's pixel-value histogram (density, [0, 1]) in one axes."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    edges = np.linspace(0, 1, _BINS + 1)
    for label in sorted(set(labels.tolist())):
        values = images[labels == label].ravel()
        ax.hist(values, bins=edges, density=True, histtype="step", lw=1.5,
                label=f"{class_names.get(label, label)} (mean {values.mean():.3f})")
    ax.set(xlabel="pixel intensity", ylabel="density", title="Pixel values per class")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plan_parts(plan: FoldPlan) -> dict[str, np.ndarray]:
    """Returns {part name: image indexes}: the hold-out, then each fold's train / val / test."""
    parts = {"holdout": plan.holdout}
    for fold in plan.folds:
        parts |= {f"fold{fold.index}/{name}": getattr(fold, name)
                  for name in ("train", "val", "test")}
    return parts


def label_counts(parts: Mapping[str, np.ndarray], labels: np.ndarray) -> list[dict]:
    """Returns one row per part with its image count per label: {"part": name, "<label>": n}."""
    classes = sorted(set(labels.tolist()))
    return [{"part": name} | {str(c): int((labels[index] == c).sum()) for c in classes}
            for name, index in parts.items()]


def fold_counts_figure(rows: list[dict], class_names: Mapping[int, str]) -> Figure:
    """Returns stacked horizontal bars of `label_counts` rows, one colour per label."""
    labels = [k for k in rows[0] if k != "part"]
    fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(rows) + 1.2))
    left = np.zeros(len(rows))
    for label in labels:
        counts = np.array([row[label] for row in rows], dtype=float)
        ax.barh(range(len(rows)), counts, left=left, label=class_names.get(int(label), label))
        left += counts
    ax.set(yticks=range(len(rows)), yticklabels=[row["part"] for row in rows],
           xlabel="images", title="Labels per part")
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def overview_figure(overview: np.ndarray, images: np.ndarray, labels: np.ndarray,
                    class_names: Mapping[int, str], per_class: int = 4, seed: int = 0) -> Figure:
    """Returns a full mammogram with its ROI outlined (`overview`: image and mask, (2, H,
    W)) beside `per_class` of the study's images per class, one row per class."""
    classes = sorted(set(labels.tolist()))
    rng = np.random.default_rng(seed)
    fig = plt.figure(figsize=(3.2 + 1.6 * per_class, max(4.0, 1.7 * len(classes))))
    grid = fig.add_gridspec(len(classes), per_class + 2)
    full = fig.add_subplot(grid[:, :2])
    full.imshow(overview[0], cmap="gray", vmin=0, vmax=1)
    full.contour(overview[1], levels=[0.5], colors="red", linewidths=1)
    full.set(xticks=[], yticks=[], title="full mammogram, ROI outlined")
    for row, label in enumerate(classes):
        members = np.flatnonzero(labels == label)
        picked = rng.choice(members, size=min(per_class, len(members)), replace=False)
        for col in range(per_class):
            ax = fig.add_subplot(grid[row, col + 2])
            ax.set(xticks=[], yticks=[])
            if col < len(picked):
                ax.imshow(side_by_side(images[picked[col]]), cmap="gray", vmin=0, vmax=1)
            if col == 0:
                ax.set_ylabel(f"{class_names.get(label, label)}\n(n={len(members)})", fontsize=8)
    fig.suptitle("The study's images per class", fontsize=10)
    fig.tight_layout()
    return fig
