"""Calibrating a binary probability: Platt scaling on the logit, and its bootstrap threshold.

Platt scaling maps p to sigmoid(slope * logit(p) + intercept), fitted by logistic
regression on labelled images. With a positive slope it keeps the ranking (the AUC), so
it changes what a probability means, not which image scores higher; a site recalibration
refits it (and the threshold) on a small labelled sample of the new source.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

_EPS = 1e-6


@dataclass(frozen=True)
class Calibration:
    """p -> sigmoid(slope * logit(p) + intercept); the identity by default."""

    slope: float = 1.0
    intercept: float = 0.0

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """Returns the calibrated probabilities (same shape)."""
        if (self.slope, self.intercept) == (1.0, 0.0):
            return np.asarray(probabilities, dtype=np.float64)
        return _sigmoid(self.slope * logit(probabilities) + self.intercept)

    def to_dict(self) -> dict:
        return {"slope": float(self.slope), "intercept": float(self.intercept)}

    @classmethod
    def from_dict(cls, raw: dict | None) -> Calibration:
        return cls(**raw) if raw else cls()


def logit(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def fit_platt(labels: np.ndarray, probabilities: np.ndarray) -> Calibration:
    """Returns the Platt scaling of `probabilities` fitted to `labels` (both classes needed).

    A fitted slope <= 0 would reverse the ranking (experts no better than chance on these
    images): the identity is returned instead.
    """
    model = LogisticRegression(C=100.0)  # a weak L2 keeps separable samples finite
    model.fit(logit(probabilities)[:, None], np.asarray(labels).astype(int))
    slope, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
    return Calibration(slope, intercept) if slope > 0 else Calibration()


def bootstrap_interval(labels: np.ndarray, probabilities: np.ndarray, rule,
                       rounds: int = 200, seed: int = 0,
                       level: float = 0.9) -> tuple[float, float]:
    """Returns the (low, high) `level` interval of `rule(labels, probabilities)` (a
    threshold rule) over bootstrap resamples of the images: how stable the threshold is."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        pick = rng.integers(0, len(labels), len(labels))
        if len(np.unique(labels[pick])) == 2:
            values.append(rule(labels[pick], probabilities[pick]))
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
