"""The CBIS report's transfer set-up end to end, offline: a quick twin of its InceptionV3
benign-vs-malignant experiment with the ImageNet base read from a local weights file and
frozen (as a user without network runs it), on a CBIS NumPy fixture; then what the runs
record (recipe, weight counts, protocol keys) and the registered model's predictions."""
from __future__ import annotations

import subprocess
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from collection_fixtures import write_cbis_arrays
from conftest import config_variant, runs_of, search_env, use_store

from mammo_core.config import load_experiment
from mammo_core.families import build_model, count_frozen, count_params

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
STUDY = "cbis_inception_benign_vs_malignant"  # experiments/published/<STUDY>_quick.yaml
REGISTERED = f"published-{STUDY}"


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    """An InceptionV3 no-top weights file of recognisable values (no ImageNet download
    here): every kernel 0.001, so a frozen base must keep exactly these."""
    base = keras.applications.InceptionV3(include_top=False, weights=None,
                                          input_shape=(75, 75, 3))
    for layer in base.layers:
        if layer.weights:
            layer.set_weights([np.full(w.shape, 0.001, np.float32) if "kernel" in w.path
                               else w.numpy() for w in layer.weights])
    path = tmp_path_factory.mktemp("weights") / "inception_v3_notop.weights.h5"
    base.save_weights(path)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory, weights_file) -> Path:
    folder = tmp_path_factory.mktemp("transfer")
    data = write_cbis_arrays(folder / "cbis_npy")
    quick = load_experiment(f"experiments/published/{STUDY}_quick.yaml")
    config = config_variant(f"experiments/published/{STUDY}_quick.yaml", folder / "offline.yaml",
                            model={"backbone": {**quick.model.backbone.model_dump(),
                                                "weights": str(weights_file),
                                                "trainable_layers": 0, "cut": "top+1"}})
    result = subprocess.run(["mlflow", "run", ".", "--env-manager", "local",
                             "-P", f"config={config}", "-P", f"data_dir={data}"],
                            cwd=ROOT, env=search_env(folder), capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert f"{REGISTERED} v1 @champion" in result.stdout
    assert "published protocol: 8 test images" in result.stdout  # the fixture's test files
    return folder


def of_kind(store: Path, kind: str) -> list:
    return [r for r in runs_of(store) if r.data.tags.get("mammo.kind") == kind]


def test_the_runs_record_the_reports_recipe_and_the_experts_weight_counts(store, weights_file):
    folds = of_kind(store, "fold")
    assert len(folds) == 2 and all(r.info.status == "FINISHED" for r in folds)
    (search,) = of_kind(store, "search")
    assert search.data.params["preprocessing.contrast_factor"] == "1.5"
    assert search.data.params["model.backbone.adapter"] == "conv1x1"
    assert search.data.params["split.protocol"] == "published"
    assert {f.data.params["fold.test_images"] for f in folds} == {"8"}  # the test partition
    experiment = load_experiment(f"experiments/published/{STUDY}.yaml")
    offline = experiment.model.backbone.replace(weights=str(weights_file), cut="top+1")
    expected = build_model({}, (48, 48, 1), experiment.model.replace(backbone=offline))
    for fold in folds:
        params, metrics = fold.data.params, fold.data.metrics
        assert (params["recipe.optimizer"], params["recipe.learning_rate"]) == ("adam", "0.001")
        assert params["recipe.early_stopping"] == "none"
        assert metrics["expert_weights"] == count_params(expected)
    assert count_frozen(expected) > count_params(expected) / 2  # most of it is the frozen base


def test_the_frozen_base_keeps_the_files_weights_and_the_model_predicts(store, monkeypatch):
    client = use_store(store, monkeypatch)
    (fold,) = [r for r in of_kind(store, "fold") if r.data.tags["mammo.fold"] == "0"]
    expert = mlflow.keras.load_model(f"runs:/{fold.info.run_id}/expert")
    convs = [layer for layer in expert.get_layer("body").layers
             if isinstance(layer, keras.layers.Conv2D) and layer.name != "to_rgb"]
    assert len(convs) > 50 and not any(layer.trainable for layer in convs)
    for layer in (convs[0], convs[-1]):  # trained, yet each kernel is still the file's
        np.testing.assert_array_equal(layer.get_weights()[0], np.float32(0.001))
    version = client.get_model_version_by_alias(REGISTERED, "champion")
    model = mlflow.pyfunc.load_model(f"models:/{REGISTERED}/{version.version}")
    patches = np.random.default_rng(0).integers(0, 65535, (3, 48, 48)).astype(np.uint16)
    out = model.predict(patches)
    assert len(out) == 3 and out["probability"].between(0, 1).all()
