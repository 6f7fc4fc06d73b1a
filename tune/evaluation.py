"""Scoring a trained model once on its test part, next to the brightness baselines.

Shared by `train` (one split) and the search (one call per outer fold), so both log
the same metric and figure names.
"""
from __future__ import annotations

import keras
import mlflow
import numpy as np

from mammo_core import metrics
from mammo_core.baselines import logistic_baseline, max_pixel_scores
from mammo_core.config import Experiment
from mammo_core.dataset import Dataset
from mammo_core.tracking import log_figure
from mammo_core.training import predict_proba


def evaluate_on_test(model: keras.Model, experiment: Experiment, dataset: Dataset,
                     images: np.ndarray,
                     parts: dict[str, np.ndarray]) -> tuple[dict[str, float], np.ndarray]:
    """Scores `model` on parts["test"]; returns (test metrics plus baseline AUCs, probabilities).

    Logs test_* metrics, baseline_*_test_auc, test_auc_margin_over_logreg,
    figures/roc_test.png, figures/confusion_test.png and predictions/test.csv.
    """
    test = parts["test"]
    labels = dataset.labels[test]
    probabilities = predict_proba(model, images[test])
    scores = {f"test_{k}": v for k, v in
              metrics.scores(labels, probabilities, experiment.training.threshold).items()}
    scores.update(baseline_aucs(dataset, parts))
    scores["test_auc_margin_over_logreg"] = scores["test_auc"] - scores["baseline_logreg_test_auc"]
    mlflow.log_metrics(scores)
    log_test_figures(experiment, labels, probabilities)
    mlflow.log_text(predictions_csv(test, labels, probabilities), "predictions/test.csv")
    return scores, probabilities


def predictions_csv(index: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                    folds: np.ndarray | None = None) -> str:
    """Returns `index,label,probability` rows, or `index,label,probability_0..K-1`; with
    `folds`, each row starts with its outer fold (`fold,index,label,...`)."""
    columns = (probabilities.reshape(len(index), -1) if probabilities.ndim == 2
               else probabilities[:, None])
    names = (["probability"] if probabilities.ndim == 1
             else [f"probability_{k}" for k in range(columns.shape[1])])
    lead = [] if folds is None else ["fold"]
    firsts = [[] for _ in index] if folds is None else [[str(f)] for f in folds]
    rows = [",".join(first + [str(i), str(label)] + [f"{p:.6f}" for p in row])
            for first, i, label, row in zip(firsts, index, labels, columns)]
    return ",".join([*lead, "index", "label", *names]) + "\n" + "\n".join(rows) + "\n"


def baseline_aucs(dataset: Dataset, parts: dict[str, np.ndarray]) -> dict[str, float]:
    """Returns the AUCs of the brightness baselines on the same test part.

    The logistic regression trains on train + val (it has nothing to select); with several
    classes it is multinomial (macro AUC), and the max-pixel score, one number for
    several classes, is left out.
    """
    fit_index = np.concatenate([parts["train"], parts["val"]])
    test_labels = dataset.labels[parts["test"]]
    scores = {"baseline_logreg_test_auc": logistic_baseline(
        dataset.images[fit_index], dataset.labels[fit_index], dataset.images[parts["test"]])}
    if len(np.unique(dataset.labels)) == 2:
        scores["baseline_max_pixel_test_auc"] = max_pixel_scores(dataset.images[parts["test"]])
    return {name: metrics.auc(test_labels, s) for name, s in scores.items()}


def log_test_figures(experiment: Experiment, labels: np.ndarray, probabilities: np.ndarray) -> None:
    """Logs figures/roc_test.png (one curve per class for several) and
    figures/confusion_test.png."""
    names = experiment.data.label_names
    if probabilities.ndim == 2:
        log_figure(metrics.per_class_roc_figure(labels, probabilities, names, "ROC per class, "
                                                "test part"), "figures/roc_test.png")
    else:
        log_figure(metrics.roc_figure(labels, probabilities, "ROC, test part"),
                   "figures/roc_test.png")
    matrix = metrics.confusion(labels, probabilities, experiment.training.threshold)
    log_figure(metrics.confusion_figure(matrix, names, "Confusion matrix, test part"),
               "figures/confusion_test.png")
