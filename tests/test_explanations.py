"""Grad-CAM and SHAP maps on a CNN trained to find small bright clusters on flat tissue."""
from __future__ import annotations

import io
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from mammo_core.config import load_experiment
from mammo_core.ensemble import Ensemble
from mammo_core.explanations import (deep_shap, explain, gradcam, inference_model,
                                     last_conv_layer, most_reliable_expert, overlay_png)
from mammo_core.hypermodel import build_model
from mammo_core.predictor import EnsemblePredictor
from mammo_core.preprocessing import preprocess

QUICK = load_experiment(Path(__file__).resolve().parents[1] / "experiments" / "microcal_quick.yaml")
BOX = 8  # side of the square the cluster's dots fall in


def synthetic(n: int, seed: int, corner: tuple[int, int] | None = None):
    """Returns (uint8 patches, labels, cluster corners): flat noisy tissue, half with a
    cluster of 4 bright dots inside a BOX x BOX square at a random (or given) place."""
    rng = np.random.default_rng(seed)
    images = rng.normal(100, 4, (n, 60, 60)).clip(0, 255)
    labels = np.arange(n) % 2
    corners = []
    for i in np.flatnonzero(labels):
        r, c = corner or tuple(rng.integers(4, 60 - BOX - 4, 2))
        dots = rng.integers(0, BOX, (4, 2))
        images[i, r + dots[:, 0], c + dots[:, 1]] = 230
        corners.append((r, c))
    return images.astype(np.uint8), labels, corners


@pytest.fixture(scope="module")
def trained() -> keras.Model:
    keras.utils.set_random_seed(0)
    raw, labels, _ = synthetic(400, seed=0)
    model = build_model(QUICK.hyperparameters, (60, 60, 1), QUICK.model, seed=0)
    model.fit(preprocess(raw, QUICK.preprocessing), labels, epochs=6, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def predictor(trained) -> EnsemblePredictor:
    flat, _, _ = synthetic(20, seed=1)
    background = preprocess(flat[::2], QUICK.preprocessing)  # the label-0 half
    experts = [trained, inference_model(trained)]  # same function, two objects
    return EnsemblePredictor(experts, Ensemble(np.array([0.25, 0.75]), 0.5), QUICK, 8,
                             backgrounds=(background, background))


@pytest.fixture(scope="module")
def clustered():
    raw, _, _ = synthetic(6, seed=2, corner=(30, 12))
    return raw[1::2]  # three positives, cluster at rows 30-37, columns 12-19


def inside_vs_outside(maps: np.ndarray) -> tuple[float, float]:
    box = np.zeros((60, 60), bool)
    box[30 - 2:30 + BOX + 2, 12 - 2:12 + BOX + 2] = True  # the dots plus the filter's spread
    return float(maps[:, box].mean()), float(maps[:, ~box].mean())


def test_the_model_learned_the_clusters(trained):
    raw, labels, _ = synthetic(100, seed=3)
    p = trained.predict(preprocess(raw, QUICK.preprocessing), verbose=0).ravel()
    assert roc_auc_score(labels, p) > 0.97


def test_inference_model_drops_augmentation_and_predicts_the_same(trained, clustered):
    images = preprocess(clustered, QUICK.preprocessing)
    net = inference_model(trained)
    assert "augmentation" not in [layer.name for layer in net.layers]
    np.testing.assert_allclose(net.predict_on_batch(images), trained.predict_on_batch(images),
                               atol=1e-6)
    assert last_conv_layer(trained) == "conv_1"  # the quick model has two blocks


def test_gradcam_maps_have_the_input_shape_and_light_up_the_cluster(trained, clustered):
    maps = gradcam(trained, preprocess(clustered, QUICK.preprocessing))
    assert maps.shape == (3, 60, 60) and np.all(np.isfinite(maps))
    assert maps.min() >= 0 and maps.max() <= 1
    inside, outside = inside_vs_outside(maps)
    assert inside > 2 * outside


def test_deep_shap_is_additive_and_attributes_the_cluster(trained, predictor, clustered):
    images = preprocess(clustered, QUICK.preprocessing)
    values, expected = deep_shap(trained, images, predictor.backgrounds[0])
    assert values.shape == (3, 60, 60) and np.all(np.isfinite(values))
    p = trained.predict_on_batch(images).ravel()
    np.testing.assert_allclose(values.reshape(3, -1).sum(axis=1), p - expected, atol=1e-3)
    inside, outside = inside_vs_outside(np.abs(values))
    assert inside > 3 * outside


def test_ensemble_shap_combines_experts_with_the_weights_and_stays_additive(predictor, clustered):
    out = explain(predictor, clustered, "shap")
    assert out.experts == (0, 1) and out.maps.shape == (3, 60, 60)
    np.testing.assert_allclose(out.probability, predictor.predict(clustered)["probability"],
                               atol=1e-5)
    np.testing.assert_allclose(out.maps.reshape(3, -1).sum(axis=1),
                               out.explained - out.expected_value, atol=1e-3)
    assert most_reliable_expert(predictor) == 1
    single = explain(predictor, clustered, "gradcam", expert=1)
    assert single.experts == (1,) and np.all(np.isfinite(single.maps))


def test_partition_shap_on_the_whole_ensemble_attributes_the_cluster(predictor, clustered):
    out = explain(predictor, clustered[:1], "partition", max_evals=200)
    assert out.maps.shape == (1, 60, 60) and np.all(np.isfinite(out.maps))
    inside, outside = inside_vs_outside(out.maps)
    assert inside > outside


def test_bad_requests_are_named(predictor, clustered):
    with pytest.raises(ValueError, match="unknown explanation method 'lime'"):
        explain(predictor, clustered, "lime")
    with pytest.raises(ValueError, match="expert must lie in 0..1"):
        explain(predictor, clustered, "gradcam", expert=5)
    bare = EnsemblePredictor(predictor.experts, predictor.ensemble, QUICK, 8)
    with pytest.raises(ValueError, match="no stored SHAP background"):
        explain(bare, clustered, "shap")


def test_overlay_png_is_a_scaled_rgb_image():
    heat = np.linspace(-1, 1, 3600).reshape(60, 60)
    for signed in (True, False):
        image = Image.open(io.BytesIO(overlay_png(np.full((60, 60), 0.5), heat, signed)))
        assert image.size == (240, 240) and image.mode == "RGB"
