import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mammo_core.classifiers import CLASSIFIERS, candidates, fit_fold, make_classifier, validate_grids
from mammo_core.config import ConfigError


def separable(n=120, dim=20, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    features = rng.normal(size=(n, dim))
    features[:, :3] += 1.5 * labels[:, None]
    return features, labels


PARTS = (np.arange(0, 60), np.arange(60, 90), np.arange(90, 120))  # train, val, test


def test_unknown_classifier_and_parameter_are_named():
    with pytest.raises(ConfigError, match="unknown classifier 'classifiers.svm_poly'"):
        validate_grids({"svm_poly": {}})
    with pytest.raises(ConfigError, match="unknown parameter 'classifiers.knn.k'"):
        validate_grids({"knn": {"k": (3,)}})
    with pytest.raises(ConfigError, match="at least one value"):
        validate_grids({"knn": {"n_neighbors": ()}})
    validate_grids({"svm_rbf": {"C": (1.0,)}})  # the SVM's own parameter behind Platt scaling


def test_candidates_is_the_cartesian_product():
    grid = {"b": (1, 2), "a": ("x", "y", "z")}
    assert len(candidates(grid)) == 6 and {"a": "z", "b": 2} in candidates(grid)
    assert candidates({}) == [{}]


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_every_classifier_gives_probabilities_that_rank_a_separable_problem(name):
    features, labels = separable()
    fit, _ = fit_fold(name, {}, features, labels, PARTS, 0, standardize=True, seed=0)
    assert fit.probabilities.shape == (30,) and np.all((0 <= fit.probabilities) & (fit.probabilities <= 1))
    assert roc_auc_score(labels[PARTS[2]], fit.probabilities) > 0.8
    np.testing.assert_array_equal(fit.test_index, PARTS[2])


def test_selection_uses_validation_auc_and_keeps_every_candidate():
    features, labels = separable()
    grid = {"n_neighbors": (1, 15)}
    fit, final = fit_fold("knn", grid, features, labels, PARTS, 0, standardize=False, seed=0)
    assert [p for p, _ in fit.tried] == [{"n_neighbors": 1}, {"n_neighbors": 15}]
    best = max(fit.tried, key=lambda t: t[1])[0]
    assert fit.best_params == best and final.named_steps["model"].n_neighbors == best["n_neighbors"]


def test_the_scaler_never_sees_test_fold_rows():
    features, labels = separable()
    features[PARTS[2]] += 1000.0  # any leak would move the fitted mean by hundreds
    _, final = fit_fold("logistic_regression", {}, features, labels, PARTS, 0, standardize=True,
                        seed=0)
    scaler = final.named_steps["scale"]
    development = np.concatenate(PARTS[:2])
    assert scaler.n_samples_seen_ == len(development)
    np.testing.assert_allclose(scaler.mean_, features[development].mean(axis=0))


def test_make_classifier_without_standardisation_has_no_scaler():
    assert list(make_classifier("naive_bayes", {}, False, 0).named_steps) == ["model"]
