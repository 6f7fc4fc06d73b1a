"""Classic classifiers for feature vectors, and their honest per-fold selection.

Each classifier is named in the experiment YAML with a small grid of parameters. On an
outer fold, every grid point is fitted on the fold's train part and scored (ROC AUC) on
its inner validation part; the best one is refitted on train + val and scores the test
part once. Standardisation sits inside the pipeline, so it only ever sees training rows.
"""
from __future__ import annotations

import itertools
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from mammo_core.errors import ConfigError

if TYPE_CHECKING:  # annotations only: the config module imports this one to check grids
    from mammo_core.config import ParamGrid

# name -> factory(seed). Every model gives probabilities: AUC is never computed from
# hard labels. SVMs get them from Platt scaling fitted by internal cross-validation on
# the training rows (sklearn's replacement for the deprecated SVC(probability=True)).
CLASSIFIERS: dict[str, Callable[[int], BaseEstimator]] = {
    "svm_rbf": lambda seed: _platt(SVC(kernel="rbf", random_state=seed)),
    "svm_linear": lambda seed: _platt(SVC(kernel="linear", random_state=seed)),
    "naive_bayes": lambda seed: GaussianNB(),
    "knn": lambda seed: KNeighborsClassifier(),
    "decision_tree": lambda seed: DecisionTreeClassifier(random_state=seed),
    "logistic_regression": lambda seed: LogisticRegression(max_iter=5000, random_state=seed),
    "random_forest": lambda seed: RandomForestClassifier(n_jobs=1, random_state=seed),
    # Histogram boosting: the exact GradientBoostingClassifier takes ~1 min per fit on
    # 2,430 wavelet features; binned splits take seconds for the same kind of model.
    "gradient_boosting": lambda seed: HistGradientBoostingClassifier(random_state=seed),
    "mlp": lambda seed: MLPClassifier(max_iter=500, random_state=seed),
}


@dataclass(frozen=True)
class FoldFit:
    """One classifier on one outer fold: what was tried, what was chosen, how it scored."""

    classifier: str
    fold: int
    best_params: dict[str, Any]
    tried: tuple[tuple[dict[str, Any], float], ...]  # (params, validation AUC)
    test_index: np.ndarray
    probabilities: np.ndarray  # of class 1 on test_index
    seconds: float


def validate_grids(grids: Mapping[str, ParamGrid]) -> None:
    """Raises ConfigError naming an unknown classifier, parameter or an empty value list."""
    for name, grid in grids.items():
        if name not in CLASSIFIERS:
            raise ConfigError(f"unknown classifier 'classifiers.{name}' "
                              f"(known: {', '.join(sorted(CLASSIFIERS))})")
        allowed = _tunable(CLASSIFIERS[name](0)).get_params()
        for param, values in grid.items():
            if param not in allowed:
                raise ConfigError(f"unknown parameter 'classifiers.{name}.{param}' "
                                  f"(allowed: {', '.join(sorted(allowed))})")
            if not values:
                raise ConfigError(f"'classifiers.{name}.{param}' must list at least one value")


def candidates(grid: ParamGrid) -> list[dict[str, Any]]:
    """Returns every parameter combination of the grid (one empty dict for an empty grid)."""
    names = sorted(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def make_classifier(name: str, params: Mapping[str, Any], standardize: bool,
                    seed: int) -> Pipeline:
    """Returns an unfitted pipeline: optional StandardScaler, then the named classifier."""
    model = CLASSIFIERS[name](seed)
    _tunable(model).set_params(**params)
    steps = [("scale", StandardScaler())] if standardize else []
    return Pipeline(steps + [("model", model)])


def fit_fold(name: str, grid: ParamGrid, features: np.ndarray, labels: np.ndarray,
             parts: tuple[np.ndarray, np.ndarray, np.ndarray], fold: int, standardize: bool,
             seed: int) -> tuple[FoldFit, Pipeline]:
    """Selects on the validation rows, refits on train + validation, scores the test rows.

    parts: (train, validation, test) row indices of `features`; fold: the outer fold's
    number, recorded in the FoldFit. Returns the FoldFit and the final fitted pipeline.
    Ties between grid points keep the first (the grid's sorted order), so the result is
    reproducible.
    """
    train, val, test = parts
    started = time.monotonic()
    tried = []
    for params in candidates(grid):
        model = _fit(make_classifier(name, params, standardize, seed), features, labels, train)
        auc = roc_auc_score(labels[val], model.predict_proba(features[val])[:, 1])
        tried.append((params, float(auc)))
    best = max(tried, key=lambda item: item[1])[0]
    development = np.concatenate([train, val])
    final = _fit(make_classifier(name, best, standardize, seed), features, labels, development)
    probabilities = final.predict_proba(features[test])[:, 1]
    return FoldFit(name, fold, best, tuple(tried), test, probabilities,
                   time.monotonic() - started), final


def _platt(svm: SVC) -> CalibratedClassifierCV:
    return CalibratedClassifierCV(svm, method="sigmoid", ensemble=False)


def _tunable(model: BaseEstimator) -> BaseEstimator:
    """Returns the estimator whose parameters a grid names (the SVM inside Platt scaling)."""
    return model.estimator if isinstance(model, CalibratedClassifierCV) else model


def _fit(model: Pipeline, features: np.ndarray, labels: np.ndarray, index: np.ndarray) -> Pipeline:
    with warnings.catch_warnings():
        # A small grid point that does not converge is scored like any other; the
        # selection on validation AUC decides whether it was good enough.
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        return model.fit(features[index], labels[index])
