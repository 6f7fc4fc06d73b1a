import io

import numpy as np
import pytest

from mammo_core.config import ModelConfig, TrainingConfig
from mammo_core.hypermodel import build_model
from mammo_core.recipe import resolve
from mammo_core.training import fit as fit_recipe, predict_proba, set_seed

HP = {"init": 4, "rate": 0.0, "depth": 1, "learning_rate": 0.01}


def toy_data(seed=0, n=64):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 16, 16, 1), dtype=np.float32) * 0.5
    y = np.arange(n) % 2
    x[y == 1, 8, 8, 0] = 1.0  # a learnable bright spot
    return x, y


def fit(model, train, val, config, **kwargs):
    """Fits with the hypermodel's recipe as `config` overrides it."""
    return fit_recipe(model, train, val, config, resolve("hypermodel", HP, training=config),
                      **kwargs)


def small_model(seed=0):
    return build_model(HP, (16, 16, 1), ModelConfig(conv_blocks=2, dense_units=8), seed=seed)


def test_fit_prints_one_status_line_per_epoch_and_learns():
    set_seed(0)
    stream = io.StringIO()
    history = fit(small_model(), toy_data(0), toy_data(1),
                  TrainingConfig(epochs=6, batch_size=16, early_stopping_patience=6),
                  stream=stream)
    lines = stream.getvalue().strip().splitlines()
    assert len(lines) == len(history.history["loss"])
    assert lines[0].startswith("epoch 1/6") and "ETA" in lines[0] and "val_auc" in lines[0]
    assert max(history.history["val_auc"]) > 0.8


def test_best_epoch_weights_are_restored():
    set_seed(1)
    model = small_model()
    val = toy_data(1)
    history = fit(model, toy_data(0), val,
                  TrainingConfig(epochs=8, batch_size=16, early_stopping_patience=2), stream=None)
    from sklearn.metrics import roc_auc_score
    restored = roc_auc_score(val[1], predict_proba(model, val[0]))
    assert abs(restored - max(history.history["val_auc"])) < 0.02


def test_same_seed_same_result():
    def run():
        set_seed(3)
        model = small_model(seed=3)
        fit(model, toy_data(0), toy_data(1), TrainingConfig(epochs=2, batch_size=16), stream=None)
        return predict_proba(model, toy_data(2)[0])
    np.testing.assert_allclose(run(), run(), atol=1e-5)


def test_several_classes_train_with_a_macro_auc_objective():
    from mammo_core.metrics import auc

    rng = np.random.default_rng(0)
    x = rng.random((60, 16, 16, 1), dtype=np.float32) * 0.5
    y = np.arange(60) % 3
    for k in range(3):  # each class has its own bright spot
        x[y == k, 4 + 4 * k, 8, 0] = 1.0
    set_seed(0)
    model = build_model(HP, (16, 16, 1), ModelConfig(conv_blocks=2, dense_units=8),
                        n_classes=3)
    config = TrainingConfig(epochs=3, batch_size=16, early_stopping_patience=3)
    history = fit(model, (x[:40], y[:40]), (x[40:], y[40:]), config, stream=None)
    assert len(history.history["val_auc"]) == 3  # MacroAUC fills what early stopping reads
    probabilities = predict_proba(model, x[40:])
    assert probabilities.shape == (20, 3)
    assert max(history.history["val_auc"]) == pytest.approx(auc(y[40:], probabilities), abs=1e-6)
