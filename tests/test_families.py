"""Model families: each builds, trains an epoch, saves and loads; backbones take local weights."""
from __future__ import annotations


import keras
import numpy as np
import pytest

from mammo_core.config import (FAMILIES, BackboneConfig, ConfigError, ModelConfig,
                               experiment_from_dict, load_experiment)
from mammo_core.explanations import deep_shap, gradcam, inference_model
from mammo_core.families import (BACKBONES, build_model, count_params, family_of,
                                 family_of_model)

SHAPES = {"mias_cnn": (128, 128, 1), "siamese": (2, 32, 32, 1)}
SMALL = ModelConfig(conv_blocks=2, dense_units=8)


def toy_data(shape: tuple, n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Flat noise; class 1 has a bright 3x3 spot in the middle."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.05, (n, *shape)).astype(np.float32)
    y = np.arange(n) % 2
    h, w = shape[0] // 2, shape[1] // 2
    x[y == 1, h - 1:h + 2, w - 1:w + 2] += 1.0
    return x, y


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_builds_trains_an_epoch_and_survives_save_and_load(family, tmp_path):
    shape = SHAPES.get(family, (60, 60, 1))
    hp = {"family": family, "init": 4, "rate": 0.1, "depth": 1, "learning_rate": 1e-3}
    model = build_model(hp, shape, SMALL, seed=0)
    x, y = toy_data(shape) if family != "siamese" else toy_pairs(shape)
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert {"loss", "auc", "accuracy"} <= set(history.history)  # same names for every family
    assert model.output_shape == (None, 1) and family_of_model(model) == family
    path = tmp_path / f"{family}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)
    assert family_of_model(loaded) == family
    cam = gradcam(loaded, x[:2])
    side = shape[1:3] if family == "siamese" else shape[:2]  # a pair's maps side by side
    assert cam.shape == (2, side[0], side[1] * (2 if family == "siamese" else 1))
    assert np.all((cam >= 0) & (cam <= 1))


def toy_pairs(shape: tuple, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (baseline, abnormal): the abnormal patch of class 1 has the bright spot."""
    baseline, _ = toy_data(shape[1:], n, seed=1)
    abnormal, y = toy_data(shape[1:], n, seed=2)
    return np.stack([baseline, abnormal], axis=1), y


@pytest.mark.parametrize("trunk", ["hypermodel", "microcal_cnn", "vgg16"])
def test_the_siamese_encoder_is_one_trunk_shared_by_both_patches(trunk):
    config = SMALL.replace(family="siamese", backbone=BackboneConfig(cut="top+4"),
                           siamese=SMALL.siamese.replace(trunk=trunk))
    hp = {"init": 4, "rate": 0.1, "depth": 1, "learning_rate": 1e-3}
    model = build_model(hp, (2, 32, 32, 1), config, seed=0)
    (encoder,) = [layer for layer in model.layers if layer.name == "encoder"]
    x, _ = toy_pairs((2, 32, 32, 1), n=2)
    assert model.predict(x, verbose=0).shape == (2, 1) and len(encoder.weights) > 0
    # one encoder layer, called on both patches: its weights are shared, not copied
    assert sum(layer.name == "encoder" for layer in model.layers) == 1
    assert len(encoder._inbound_nodes) == 2
    with pytest.raises(ValueError, match="pairs of patches"):
        build_model(hp, (32, 32, 1), config)


def test_deep_shap_of_a_pair_adds_up_to_the_probability_and_shows_both_patches():
    config = SMALL.replace(family="siamese")
    model = build_model({"init": 4, "rate": 0.1, "depth": 1, "learning_rate": 1e-3},
                        (2, 32, 32, 1), config, seed=0)
    x, _ = toy_pairs((2, 32, 32, 1), n=6)
    values, base = deep_shap(model, x[:2], x[2:])
    assert values.shape == (2, 32, 64)  # baseline's attributions left, abnormal's right
    np.testing.assert_allclose(values.sum(axis=(1, 2)) + base,
                               model.predict(x[:2], verbose=0).ravel(), atol=1e-4)


def test_the_family_comes_from_the_trial_or_the_config():
    assert family_of({"family": "vgg16"}, ModelConfig()) == "vgg16"
    assert family_of({}, ModelConfig(family="mias_cnn")) == "mias_cnn"
    with pytest.raises(ValueError, match="unknown model family 'resnet'"):
        build_model({"family": "resnet"}, (60, 60, 1), ModelConfig())


def test_fixed_input_families_say_what_they_accept():
    with pytest.raises(ValueError, match="mias_cnn takes 128x128 images.*got 60x60"):
        build_model({}, (60, 60, 1), ModelConfig(family="mias_cnn"))
    with pytest.raises(ValueError, match="microcal_cnn needs images of at least 16x16"):
        build_model({}, (12, 12, 1), ModelConfig(family="microcal_cnn"))
    with pytest.raises(ValueError, match="cut must be 'top' or 'top\\+k' with k < 5"):
        build_model({"cut": "top+7"}, (60, 60, 1), ModelConfig(family="vgg16"))


def test_inception_input_is_upsized_to_its_minimum_and_cut_levels_shrink_the_model():
    small = build_model({"cut": "top+10"}, (60, 60, 1), ModelConfig(family="inception_v3"))
    assert small.get_layer("body").get_layer("upsize").output.shape[1:3] == (75, 75)
    vgg = {cut: count_params(build_model({"cut": cut}, (60, 60, 1),
                                         ModelConfig(family="vgg16"))) for cut in ("top", "top+2")}
    assert vgg["top+2"] < vgg["top"] / 5


def test_trainable_layers_freeze_the_backbone_from_the_bottom():
    config = ModelConfig(family="vgg16", backbone=BackboneConfig(cut="top+3", trainable_layers=2))
    body = build_model({}, (60, 60, 1), config).get_layer("body")
    convs = {layer.name: layer.trainable for layer in body.layers if layer.name.startswith("block")}
    assert convs == {"block1_conv1": False, "block1_conv2": False, "block1_pool": False,
                     "block2_conv1": False, "block2_conv2": True, "block2_pool": True}
    assert body.get_layer("to_rgb").trainable  # the 1 -> 3 channel map always learns


def test_a_local_weights_file_is_loaded_into_the_backbone(tmp_path):
    """The test writes a VGG16 weights file of its own (no network here) and checks that
    the family's backbone layers hold exactly the file's values."""
    reference = keras.applications.VGG16(include_top=False, weights=None, input_shape=(60, 60, 3))
    for layer in reference.layers:  # values no fresh initialisation would give
        layer.set_weights([np.full(w.shape, 0.01 * (i + 1), np.float32)
                           for i, w in enumerate(layer.get_weights())])
    path = tmp_path / "vgg16_notop.weights.h5"
    reference.save_weights(path)
    config = ModelConfig(family="vgg16", backbone=BackboneConfig(weights=str(path)))
    body = build_model({}, (60, 60, 1), config).get_layer("body")
    for name in ("block1_conv1", "block3_conv2", "block5_conv3"):
        for ours, theirs in zip(body.get_layer(name).get_weights(),
                                reference.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    random = build_model({}, (60, 60, 1), ModelConfig(family="vgg16")).get_layer("body")
    assert not np.allclose(random.get_layer("block1_conv1").get_weights()[0],
                           reference.get_layer("block1_conv1").get_weights()[0])


def test_a_missing_weights_file_names_how_to_supply_one(tmp_path):
    config = ModelConfig(family="vgg16", backbone=BackboneConfig(weights=str(tmp_path / "no.h5")))
    with pytest.raises(ValueError, match="cannot load vgg16 weights.*Place "
                       + BACKBONES["vgg16"].weights_file + ".*model.backbone.weights"):
        build_model({}, (60, 60, 1), config)


@pytest.mark.parametrize("family, shape", [("mass_calc_m3", (60, 60, 1)),
                                           ("vgg16", (24, 24, 1))])  # vgg16: upsized to 32
def test_deep_shap_adds_up_for_a_family_model(family, shape):
    config = ModelConfig(family=family, backbone=BackboneConfig(cut="top+3", head_units=8))
    model = build_model({}, shape, config, seed=0)
    x, y = toy_data(shape, n=16)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    values, expected = deep_shap(model, x[:2], x[8:])
    probability = inference_model(model).predict(x[:2], verbose=0).ravel()
    np.testing.assert_allclose(values.sum(axis=(1, 2)), probability - expected, atol=1e-3)


def test_family_is_a_checked_config_key_and_search_dimension():
    quick = load_experiment("experiments/families_quick.yaml")
    assert quick.search_space["family"].values == ("hypermodel", "microcal_cnn",
                                                   "mass_calc_m5", "vgg16")
    raw = quick.to_dict()
    for change, message in (
            ({"model": {**raw["model"], "family": "resnet"}}, "'model.family' must be one of"),
            ({"search_space": {"family": {"type": "choice", "values": ["vgg19"]}}},
             "search_space.family' must be a choice of")):
        with pytest.raises(ConfigError, match=message):
            experiment_from_dict({**raw, **change})
    vgg_only = quick.model.replace(family="vgg16")
    assert vgg_only.backbone.cut == "top+4"
