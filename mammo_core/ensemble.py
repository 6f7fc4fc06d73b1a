"""Combining the fold experts: simplex weights, decision thresholds, honest estimates.

The weights are fitted on the ensemble hold-out, which no expert trained on. Scoring the
weights on the very images they were fitted on would flatter them, so `cross_fit` scores
every method (plain average, learned weights, best single expert) on grouped parts of the
hold-out that its fitting did not see.

Expert probabilities are (N, experts) for a binary task and (N, experts, K) for K classes;
the weights are one per expert either way, and a task of several classes labels each image
with its most probable class (the threshold applies to binary tasks only).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from sklearn.metrics import roc_curve
from sklearn.model_selection import StratifiedGroupKFold

from mammo_core.calibration import Calibration, fit_platt
from mammo_core.config import RegistryConfig
from mammo_core.metrics import auc
from mammo_core.registry import ENSEMBLE_METHODS

METHODS = ENSEMBLE_METHODS  # registered in mammo_core/registry.py, checked by the config
_EPS = 1e-6


@dataclass(frozen=True)
class Ensemble:
    """Non-negative weights summing to 1, the calibration of the weighted binary
    probability, and the decision threshold on the calibrated probability."""

    weights: np.ndarray
    threshold: float
    calibration: Calibration = Calibration()

    def combine(self, expert_probabilities: np.ndarray) -> np.ndarray:
        """Returns the (calibrated) ensemble probability per image (N,) from (N, experts),
        or per image and class (N, K) from (N, experts, K)."""
        weighted = np.tensordot(np.asarray(expert_probabilities, dtype=np.float64),
                                self.weights, axes=([1], [0]))
        return weighted if weighted.ndim == 2 else self.calibration.apply(weighted)

    def labels(self, probabilities: np.ndarray) -> np.ndarray:
        """Returns the decided label per image: probability >= threshold, or the most
        probable class for (N, K) probabilities."""
        if probabilities.ndim == 2:
            return probabilities.argmax(axis=1).astype(np.int64)
        return (probabilities >= self.threshold).astype(np.int64)

    def to_dict(self) -> dict:
        return {"weights": [float(w) for w in self.weights], "threshold": float(self.threshold),
                "calibration": self.calibration.to_dict()}

    @classmethod
    def from_dict(cls, raw: dict) -> Ensemble:
        # models registered before calibration have none: the identity
        return cls(np.asarray(raw["weights"], dtype=np.float64), float(raw["threshold"]),
                   Calibration.from_dict(raw.get("calibration")))


def fit_weights(expert_probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Returns the simplex weights minimising the log loss of the weighted average.

    Binary probabilities are treated as two classes, so one (categorical) log loss serves
    both. Starts from the plain average, so experts that are equally good stay equal.
    """
    p = np.asarray(expert_probabilities, dtype=np.float64)
    if p.ndim == 2:
        p = np.stack([1 - p, p], axis=-1)
    # each expert's probability of the true class: (N, experts)
    true = np.clip(p[np.arange(len(labels)), :, np.asarray(labels, dtype=int)], _EPS, 1)
    k = true.shape[1]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        q = np.clip(true @ w, _EPS, 1)
        return float(-np.mean(np.log(q))), -(true.T @ (1 / q)) / len(q)

    result = minimize(loss, np.full(k, 1.0 / k), jac=True, method="SLSQP",
                      bounds=[(0.0, 1.0)] * k,
                      constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}])
    weights = np.clip(result.x, 0.0, None)
    return weights / weights.sum()


def choose_threshold(labels: np.ndarray, probabilities: np.ndarray,
                     config: RegistryConfig) -> float:
    """Returns the decision threshold the config's rule picks on these images.

    fixed: the configured value; youden: the ROC point maximising sensitivity +
    specificity - 1; sensitivity: the highest threshold reaching the target sensitivity.
    """
    if config.threshold == "fixed" or np.ndim(probabilities) == 2:  # several classes: argmax
        return float(config.fixed_threshold)
    fpr, tpr, thresholds = roc_curve(labels, probabilities)
    thresholds = np.minimum(thresholds, 1.0)  # roc_curve's first threshold is +inf
    if config.threshold == "youden":
        return float(thresholds[np.argmax(tpr - fpr)])
    return float(thresholds[np.argmax(tpr >= config.target_sensitivity)])


def fit_ensemble(expert_probabilities: np.ndarray, labels: np.ndarray, method: str,
                 config: RegistryConfig) -> Ensemble:
    """Returns the `method` ensemble (average, learned or best_single) fitted on these
    images: weights, then (binary, `config.calibration`) Platt scaling of the weighted
    probability, then the threshold the config's rule picks on the calibrated one."""
    k = expert_probabilities.shape[1]
    if method == "average":
        weights = np.full(k, 1.0 / k)
    elif method == "learned":
        weights = fit_weights(expert_probabilities, labels)
    elif method == "best_single":
        aucs = [auc(labels, expert_probabilities[:, j]) for j in range(k)]
        weights = np.eye(k)[int(np.argmax(aucs))]
    else:
        raise ValueError(f"unknown ensemble method {method!r} (known: {', '.join(METHODS)})")
    return calibrated(weights, expert_probabilities, labels, config)


def calibrated(weights: np.ndarray, expert_probabilities: np.ndarray, labels: np.ndarray,
               config: RegistryConfig, threshold: float | None = None) -> Ensemble:
    """Returns Ensemble(weights) with (binary, `config.calibration` platt) Platt scaling of
    the weighted probability fitted on these images, and `threshold`, or (None) the
    config rule's threshold on the calibrated probability. A site recalibration calls it
    with the registered weights (and threshold)."""
    combined = Ensemble(weights, 0.0).combine(expert_probabilities)
    calibration = Calibration()
    if combined.ndim == 1 and config.calibration == "platt":
        calibration = fit_platt(labels, combined)
        combined = calibration.apply(combined)
    if threshold is None:
        threshold = choose_threshold(labels, combined, config)
    return Ensemble(weights, threshold, calibration)


def winner(scores: dict[str, dict[str, float]]) -> str:
    """Returns the method with the best cross-fitted AUC; ties go to the simpler method
    (the order of METHODS: average, learned, best_single)."""
    best = max(scores[m]["auc"] for m in METHODS if m in scores)
    return next(m for m in METHODS if m in scores and scores[m]["auc"] >= best - 1e-12)


def cross_fit_parts(labels: np.ndarray, groups: np.ndarray, n_parts: int,
                    seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Returns the hold-out's grouped, stratified (fit part, score part) index pairs:
    `n_parts` of them, or one per group when there are fewer groups."""
    n_splits = min(n_parts, len(np.unique(groups)))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels, groups))


def cross_fit(expert_probabilities: np.ndarray, labels: np.ndarray, groups: np.ndarray,
              method: str, config: RegistryConfig,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Returns out-of-part (probabilities (N,) or (N, K), thresholds (N,)) for `method`.

    The hold-out is cut into grouped, stratified parts; each part is scored by weights and
    a threshold fitted on the other parts, so no image scores a fit it took part in.
    """
    probabilities = np.zeros((len(labels), *expert_probabilities.shape[2:]))
    thresholds = np.zeros(len(labels))
    for fit_part, score_part in cross_fit_parts(labels, groups, config.cross_fit_folds, seed):
        if len(np.unique(labels[fit_part])) < 2:
            raise ValueError("a cross-fitting part holds one class only; lower "
                             "'registry.cross_fit_folds'")
        ensemble = fit_ensemble(expert_probabilities[fit_part], labels[fit_part], method, config)
        probabilities[score_part] = ensemble.combine(expert_probabilities[score_part])
        thresholds[score_part] = ensemble.threshold
    return probabilities, thresholds
