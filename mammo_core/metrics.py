"""Classification metrics and the figures people look at (ROC, confusion matrix, curves).

Figures are returned as matplotlib Figures (headless Agg backend); logging them is the
tracking module's job.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve  # noqa: E402


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray,
                   threshold: float = 0.5) -> dict[str, float]:
    """Returns AUC, accuracy, sensitivity, specificity, precision, F1 and F2.

    AUC uses the probabilities; the other metrics use `probabilities >= threshold`.
    F2 weights recall four times as much as precision: a missed cancer costs more.
    Ratios with an empty denominator are reported as 0.
    """
    probabilities = np.asarray(probabilities, dtype=float).ravel()
    return label_metrics(labels, (probabilities >= threshold).astype(int), probabilities)


def balanced_accuracy(binary: Mapping[str, float]) -> float:
    """Returns (sensitivity + specificity) / 2 of a binary_metrics dictionary."""
    return (binary["sensitivity"] + binary["specificity"]) / 2


def label_metrics(labels: np.ndarray, predicted: np.ndarray,
                  probabilities: np.ndarray) -> dict[str, float]:
    """Returns binary_metrics' dictionary for given predicted labels (any thresholds)."""
    labels = np.asarray(labels).astype(int)
    if len(np.unique(labels)) < 2:
        raise ValueError("ROC AUC needs both classes among the labels")
    tn, fp, fn, tp = confusion_matrix(labels, np.asarray(predicted).astype(int).ravel(),
                                      labels=[0, 1]).ravel()
    sensitivity = _ratio(tp, tp + fn)
    precision = _ratio(tp, tp + fp)
    return {"auc": float(roc_auc_score(labels, np.asarray(probabilities, dtype=float).ravel())),
            "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
            "sensitivity": sensitivity,
            "specificity": _ratio(tn, tn + fp),
            "precision": precision,
            "f1": _fbeta(precision, sensitivity, 1.0),
            "f2": _fbeta(precision, sensitivity, 2.0)}


def confusion(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Returns the confusion matrix: [[tn, fp], [fn, tp]] for binary probabilities (N,) at
    `threshold`, K x K (rows true, columns the most probable class) for (N, K)."""
    probabilities = np.asarray(probabilities)
    if probabilities.ndim == 2:
        return confusion_matrix(np.asarray(labels).astype(int), probabilities.argmax(axis=1),
                                labels=list(range(probabilities.shape[1])))
    predicted = (probabilities.ravel() >= threshold).astype(int)
    return confusion_matrix(np.asarray(labels).astype(int), predicted, labels=[0, 1])


# --- several classes: probabilities (N, K), one column per class ------------------------

def auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Returns the ROC AUC: binary for (N,) probabilities, macro one-vs-rest for (N, K)."""
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.ndim == 1:
        return float(roc_auc_score(labels, probabilities))
    present = np.unique(labels)
    if len(present) < probabilities.shape[1]:
        # macro one-vs-rest over the classes present (a small part can lack one)
        return float(np.mean([roc_auc_score(labels == k, probabilities[:, k]) for k in present]))
    return float(roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"))


def multiclass_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Returns macro one-vs-rest AUC, accuracy, balanced accuracy (mean recall) and each
    class's recall (`recall_<k>`) and one-vs-rest AUC (`auc_<k>`); labels = most probable."""
    labels = np.asarray(labels).astype(int)
    predicted = np.asarray(probabilities).argmax(axis=1)
    out = {"auc": auc(labels, probabilities), "accuracy": float(np.mean(predicted == labels))}
    recalls = {}
    for k in range(probabilities.shape[1]):
        mask = labels == k
        if mask.any():
            recalls[k] = float(np.mean(predicted[mask] == k))
            if not mask.all():
                out[f"auc_{k}"] = float(roc_auc_score(mask, probabilities[:, k]))
    out["balanced_accuracy"] = float(np.mean(list(recalls.values())))
    out |= {f"recall_{k}": r for k, r in recalls.items()}
    return out


def scores(labels: np.ndarray, probabilities: np.ndarray, threshold=0.5) -> dict[str, float]:
    """Returns binary_metrics for (N,) probabilities (`threshold` a number or one per
    image), multiclass_metrics for (N, K); both carry `auc` and `accuracy`."""
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.ndim == 2:
        return multiclass_metrics(labels, probabilities)
    return label_metrics(labels, (probabilities >= threshold).astype(int), probabilities)


def per_class_roc_figure(labels: np.ndarray, probabilities: np.ndarray,
                         class_names: Sequence[str], title: str = "ROC per class") -> Figure:
    """Returns one one-vs-rest ROC curve per class of (N, K) probabilities, AUCs in the legend."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for k, name in enumerate(class_names):
        mask = np.asarray(labels) == k
        if mask.any() and not mask.all():
            fpr, tpr, _ = roc_curve(mask, probabilities[:, k])
            ax.plot(fpr, tpr, lw=1.5,
                    label=f"{name} (AUC {roc_auc_score(mask, probabilities[:, k]):.3f})")
    return _finish_roc(fig, ax, title)


def roc_figure(labels: np.ndarray, probabilities: np.ndarray, title: str = "ROC") -> Figure:
    """Returns a ROC curve figure with the AUC in the legend and the chance diagonal."""
    fpr, tpr, _ = roc_curve(labels, np.asarray(probabilities).ravel())
    auc = roc_auc_score(labels, np.asarray(probabilities).ravel())
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, lw=2, label=f"AUC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set(xlabel="1 - specificity (FPR)", ylabel="sensitivity (TPR)", title=title,
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str],
                     title: str = "Confusion matrix") -> Figure:
    """Returns a confusion-matrix heatmap with counts and row percentages."""
    side = max(4.5, 1.1 * len(class_names) + 1.5)
    fig, ax = plt.subplots(figsize=(side, side - 0.5))
    ax.imshow(matrix, cmap="Blues")
    totals = matrix.sum(axis=1, keepdims=True).clip(min=1)
    for (row, col), count in np.ndenumerate(matrix):
        color = "white" if count > matrix.max() / 2 else "black"
        ax.text(col, row, f"{count}\n{count / totals[row, 0]:.0%}", ha="center",
                va="center", color=color)
    ax.set(xticks=range(len(class_names)), yticks=range(len(class_names)),
           xticklabels=class_names, yticklabels=class_names,
           xlabel="predicted", ylabel="true", title=title)
    _slant(ax, class_names)
    fig.tight_layout()
    return fig


def _slant(ax, class_names: Sequence[str]) -> None:
    """Turns long or many column labels 45 degrees, so they do not overlap."""
    if len(class_names) > 2 or max(len(n) for n in class_names) > 12:
        ax.tick_params(axis="x", labelrotation=45)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")


def learning_curves_figure(history: Mapping[str, Sequence[float]]) -> Figure:
    """Returns loss and AUC per epoch, training next to validation."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("loss", "auc")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + metric)
            if values:
                ax.plot(range(1, len(values) + 1), values, style,
                        label=(prefix or "train_") + metric)
        ax.set(xlabel="epoch", title=metric)
        ax.legend()
    fig.tight_layout()
    return fig


def time_to_quality_figure(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]]
                           ) -> Figure:
    """Returns best-so-far validation AUC against wall time, one step line per curve
    (name -> (seconds, AUC)), so search budgets can be compared: the whole range on the
    left, zoomed on the right to just below the lowest final AUC."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    finals = [values[-1] for _, values in curves.values() if len(values)]
    for ax in axes:
        for name, (seconds, values) in curves.items():
            if len(seconds):
                ax.step(np.asarray(seconds) / 60, values, where="post", label=name)
        ax.set(xlabel="wall time since the search started (min)",
               ylabel="best validation AUC so far")
        ax.grid(alpha=0.3)
    axes[0].set_title("Time to quality")
    if finals:
        axes[0].legend(fontsize="small")
        axes[1].set_ylim(min(finals) - 0.02, max(max(finals) + 0.005, min(finals)))
    axes[1].set_title("zoomed on the final values")
    fig.tight_layout()
    return fig


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def _fbeta(precision: float, recall: float, beta: float) -> float:
    den = beta ** 2 * precision + recall
    return float((1 + beta ** 2) * precision * recall / den) if den else 0.0


def mean_std(per_fold: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Returns `<metric>_mean` and `<metric>_std` (sample std) over folds for every metric
    all folds have (a class missing from one fold's test part has no recall there)."""
    out = {}
    for name in [n for n in per_fold[0] if all(n in fold for fold in per_fold)]:
        values = np.array([fold[name] for fold in per_fold], dtype=float)
        out[f"{name}_mean"] = float(values.mean())
        out[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out


def cv_roc_figure(curves: Sequence[tuple[np.ndarray, np.ndarray]],
                  title: str = "ROC per outer fold") -> Figure:
    """Returns every fold's ROC, the mean curve and a +/-1 std band.

    `curves` holds (labels, probabilities) per fold; the mean is taken over TPRs
    interpolated on a common FPR grid.
    """
    grid = np.linspace(0, 1, 101)
    fig, ax = plt.subplots(figsize=(5, 5))
    tprs, aucs = [], []
    for k, (labels, probabilities) in enumerate(curves):
        fpr, tpr, _ = roc_curve(labels, probabilities)
        aucs.append(roc_auc_score(labels, probabilities))
        ax.plot(fpr, tpr, lw=1, alpha=0.5, label=f"fold {k + 1} (AUC {aucs[-1]:.3f})")
        tprs.append(np.interp(grid, fpr, tpr))
        tprs[-1][0] = 0.0
    mean, std = np.mean(tprs, axis=0), np.std(tprs, axis=0)
    ax.plot(grid, mean, color="black", lw=2,
            label=f"mean (AUC {np.mean(aucs):.3f} ± {np.std(aucs, ddof=1):.3f})")
    ax.fill_between(grid, np.clip(mean - std, 0, 1), np.clip(mean + std, 0, 1),
                    color="grey", alpha=0.25, label="± 1 std")
    return _finish_roc(fig, ax, title)


def confusion_grid_figure(matrices: Sequence[np.ndarray], class_names: Sequence[str]) -> Figure:
    """Returns one confusion-matrix panel per fold, side by side."""
    side = max(3.2, 0.8 * len(class_names) + 1.5)
    fig, axes = plt.subplots(1, len(matrices), figsize=(side * len(matrices), side),
                             squeeze=False)
    for k, (ax, matrix) in enumerate(zip(axes[0], matrices)):
        ax.imshow(matrix, cmap="Blues")
        for (row, col), count in np.ndenumerate(matrix):
            ax.text(col, row, str(count), ha="center", va="center",
                    color="white" if count > matrix.max() / 2 else "black")
        ax.set(xticks=range(len(class_names)), yticks=range(len(class_names)),
               xticklabels=class_names, yticklabels=class_names if k == 0 else [],
               title=f"fold {k + 1}", xlabel="predicted", ylabel="true" if k == 0 else "")
        _slant(ax, class_names)
    fig.tight_layout()
    return fig


def roc_comparison_figure(labels: np.ndarray, curves: Mapping[str, np.ndarray],
                          title: str = "ROC") -> Figure:
    """Returns the ROC curves of several scorers of the same images, AUCs in the legend."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, probabilities in curves.items():
        fpr, tpr, _ = roc_curve(labels, probabilities)
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {roc_auc_score(labels, probabilities):.3f})")
    return _finish_roc(fig, ax, title)


def ranking_figure(per_fold_auc: Mapping[str, Sequence[float]], highlight: Sequence[str] = (),
                   title: str = "Mean CV test AUC (± 1 std), same folds",
                   xlabel: str = "ROC AUC on the outer test folds") -> Figure:
    """Returns horizontal bars of mean AUC with ±1 std error bars, best on top.

    Each fold's AUC is drawn as a dot on its bar; names in `highlight` (the CNN) get
    their own colour.
    """
    order = sorted(per_fold_auc, key=lambda name: np.mean(per_fold_auc[name]))
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(order) + 1.2))
    for row, name in enumerate(order):
        values = np.asarray(per_fold_auc[name], dtype=float)
        std = values.std(ddof=1) if len(values) > 1 else 0.0
        colour = "tab:red" if name in highlight else "tab:blue"
        ax.barh(row, values.mean(), xerr=std, color=colour, alpha=0.6, capsize=3)
        ax.plot(values, np.full(len(values), row), "k.", ms=3)
        ax.text(0.505, row, f"{values.mean():.3f} ± {std:.3f}", va="center", fontsize=8)
    ax.set(yticks=range(len(order)), yticklabels=order, xlim=(0.5, 1.0),
           xlabel=xlabel, title=title)
    fig.tight_layout()
    return fig


def explanation_figure(patches: np.ndarray, columns: Mapping[str, tuple[np.ndarray, bool]],
                       captions: Sequence[str], title: str) -> Figure:
    """Returns one row per patch: the patch, then each heatmap blended over it.

    `columns` maps a column title to (maps (N, H, W), signed). Unsigned maps (Grad-CAM)
    use `jet` in [0, 1]; signed maps (SHAP) use blue-white-red, symmetric around 0 per row.
    """
    n, width = len(patches), len(columns) + 1
    fig, axes = plt.subplots(n, width, figsize=(2.1 * width, 2.1 * n + 0.5), squeeze=False)
    for row in range(n):
        axes[row, 0].imshow(patches[row], cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_ylabel(captions[row], fontsize=8)
        for col, (name, (maps, signed)) in enumerate(columns.items(), 1):
            ax = axes[row, col]
            ax.imshow(patches[row], cmap="gray", vmin=0, vmax=1)
            bound = float(np.abs(maps[row]).max()) or 1.0
            # signed maps fade out where they are near 0, so the tissue stays visible
            alpha = np.clip(np.abs(maps[row]) / bound, 0, 1) * 0.9 if signed else 0.55
            ax.imshow(maps[row], cmap="bwr" if signed else "jet", alpha=alpha,
                      vmin=-bound if signed else 0, vmax=bound if signed else 1)
            if row == 0:
                ax.set_title(name, fontsize=8)
        if row == 0:
            axes[0, 0].set_title("patch", fontsize=8)
    for ax in axes.ravel():
        ax.set(xticks=[], yticks=[])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def patch_gallery_figure(images: np.ndarray, captions: Sequence[str], title: str,
                         columns: int = 8) -> Figure:
    """Returns a grid of grayscale patches, each with its caption (at most 4 rows' worth)."""
    images = images[:columns * 4]
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows + 0.4),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, caption in zip(axes.ravel(), images, captions):
        ax.imshow(side_by_side(image), cmap="gray")
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title if len(images) else f"{title}: none", fontsize=10)
    fig.tight_layout()
    return fig


def side_by_side(image: np.ndarray) -> np.ndarray:
    """Returns a patch as one 2-D picture: a (baseline, abnormal) pair (2, H, W) side by
    side, a single patch (H, W[, 1]) as it is."""
    image = np.squeeze(image)
    return np.concatenate(list(image), axis=1) if image.ndim == 3 else image


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray,
                               bins: int = 10) -> float:
    """Returns the ECE: over equal-width probability bins, |mean probability - share of
    positives|, weighted by each bin's share of the images (0 = calibrated)."""
    probabilities = np.asarray(probabilities, dtype=float).ravel()
    labels = np.asarray(labels, dtype=float).ravel()
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    gap = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            gap += mask.mean() * abs(probabilities[mask].mean() - labels[mask].mean())
    return float(gap)


def reliability_figure(labels: np.ndarray, curves: Mapping[str, np.ndarray], bins: int = 10,
                       title: str = "Reliability") -> Figure:
    """Returns a reliability diagram: per probability bin, the share of positives against
    the mean probability, one line per scorer (ECE in the legend), and the diagonal."""
    fig, ax = plt.subplots(figsize=(4.8, 4.8))
    edges = np.linspace(0, 1, bins + 1)
    for name, probabilities in curves.items():
        which = np.minimum((np.asarray(probabilities) * bins).astype(int), bins - 1)
        points = [(probabilities[which == b].mean(), np.mean(labels[which == b]))
                  for b in range(bins) if (which == b).any()]
        ece = expected_calibration_error(labels, probabilities, bins)
        ax.plot(*zip(*points), "o-", ms=4, label=f"{name} (ECE {ece:.3f})")
    ax.plot(edges[[0, -1]], edges[[0, -1]], ls="--", color="grey", lw=1)
    ax.set(xlabel="mean predicted probability", ylabel="share of positives", title=title,
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def _finish_roc(fig: Figure, ax, title: str) -> Figure:
    """Adds the chance diagonal, axis labels and legend every ROC figure shares."""
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set(xlabel="1 - specificity (FPR)", ylabel="sensitivity (TPR)", title=title,
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
