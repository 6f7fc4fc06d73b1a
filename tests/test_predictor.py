"""The packaged ensemble's files: written, loaded back, and scoring raw patches as trained."""
from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

from pathlib import Path

import numpy as np
import pytest

from mammo_core.config import load_experiment
from mammo_core.ensemble import Ensemble
from mammo_core.hypermodel import build_model
from mammo_core.patches import PatchError
from mammo_core.predictor import EnsemblePredictor, load_predictor, write_bundle
from mammo_core.preprocessing import preprocess

ROOT = Path(__file__).resolve().parents[1]
QUICK = load_experiment(ROOT / "experiments" / "microcal_quick.yaml")


@pytest.fixture(scope="module")
def predictor() -> EnsemblePredictor:
    experts = [build_model(QUICK.hyperparameters, (60, 60, 1), QUICK.model, seed=s) for s in (0, 1)]
    return EnsemblePredictor(experts, Ensemble(np.array([0.3, 0.7]), 0.5), QUICK, bit_depth=8)


def patches() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (5, 60, 60), dtype=np.uint8)


def test_predict_combines_experts_on_preprocessed_patches(predictor):
    out = predictor.predict(patches())
    images = preprocess(patches(), QUICK.preprocessing)
    by_hand = np.stack([m.predict(images, verbose=0).ravel() for m in predictor.experts], axis=1)
    np.testing.assert_allclose(out["experts"], by_hand, atol=1e-5)
    np.testing.assert_allclose(out["probability"], by_hand @ [0.3, 0.7], atol=1e-5)
    np.testing.assert_array_equal(out["label"], (out["probability"] >= 0.5).astype(int))


def test_experts_at_once_on_an_executor_give_the_same_columns_in_order(predictor):
    # the columns must stay in expert order whichever thread finishes first
    reversed_weights = dataclasses.replace(predictor, experts=predictor.experts[::-1])
    with ThreadPoolExecutor(2) as threads:
        for model in (predictor, reversed_weights):
            at_once = model.predict(patches(), executor=threads)
            np.testing.assert_array_equal(at_once["experts"], model.predict(patches())["experts"])
    np.testing.assert_array_equal(at_once["experts"],
                                  predictor.predict(patches())["experts"][:, ::-1])


def test_experts_as_one_graph_give_the_same_columns_in_order(predictor):
    reversed_experts = dataclasses.replace(predictor, experts=predictor.experts[::-1])
    for model in (predictor, reversed_experts):
        np.testing.assert_allclose(model.predict(patches(), graph=True)["experts"],
                                   model.predict(patches())["experts"], atol=1e-6)
    many = np.random.default_rng(2).integers(0, 256, (300, 60, 60), dtype=np.uint8)
    # more than one chunk of _BATCH, and a size the graph has not seen
    np.testing.assert_allclose(predictor.predict(many, graph=True)["probability"],
                               predictor.predict(many)["probability"], atol=1e-6)


def test_bundle_round_trip_reproduces_predictions(predictor, tmp_path):
    paths = write_bundle(tmp_path, predictor)
    assert sorted(paths) == ["ensemble", "experiment", "expert_0", "expert_1"]
    assert paths["expert_0"].endswith(".keras")
    loaded = load_predictor(paths)
    assert loaded.bit_depth == 8 and loaded.experiment == QUICK and loaded.backgrounds == ()
    np.testing.assert_allclose(loaded.predict(patches())["probability"],
                               predictor.predict(patches())["probability"], atol=1e-6)


def test_bundle_keeps_the_shap_backgrounds_per_expert(predictor, tmp_path):
    backgrounds = (np.full((3, 60, 60, 1), 0.1, np.float32), np.full((3, 60, 60, 1), 0.2, np.float32))
    with_background = dataclasses.replace(predictor, backgrounds=backgrounds)
    loaded = load_predictor(write_bundle(tmp_path, with_background))
    for stored, original in zip(loaded.backgrounds, backgrounds, strict=True):
        np.testing.assert_array_equal(stored, original)


def test_bad_patches_are_refused_before_any_expert_runs(predictor):
    with pytest.raises(PatchError, match="expected patches shaped"):
        predictor.predict(np.zeros((1, 64, 64), np.uint8))
