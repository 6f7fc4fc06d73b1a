"""Model families: each builds, trains an epoch, saves and loads; backbones take local weights."""
from __future__ import annotations


import keras
import numpy as np
import pytest

from mammo_core.config import (FAMILIES, BackboneConfig, ConfigError, ModelConfig,
                               experiment_from_dict, load_experiment)
from mammo_core.explanations import deep_shap, gradcam, inference_model
from mammo_core.families import (BACKBONES, build_model, count_frozen, count_params,
                                 family_of, family_of_model)
from mammo_core.registry import PAIR_FAMILIES

SHAPES = {"mias_cnn": (128, 128, 1), "siamese": (2, 32, 32, 1), "siamese_cbis": (2, 48, 48, 1)}
RANDOM = BackboneConfig(weights=None, trainable_layers=None)  # no ImageNet file here
SMALL = ModelConfig(conv_blocks=2, dense_units=8, backbone=RANDOM.replace(head_units=16))
HP = {"init": 4, "rate": 0.1, "depth": 1, "learning_rate": 1e-3}

# Each published network against the weight count its document prints (../shared/seeds):
# family, input, model.backbone changes, total weights, frozen weights.
PUBLISHED = [
    ("microcal_cnn", (60, 60, 1), {}, 568_449, 0),  # 001, its summary
    ("mias_cnn", (128, 128, 1), {}, 117_505, 0),  # 004, its code
    ("cbis_scratch", (150, 150, 1), {}, 3_452_545, 0),  # 003, section 4.1
    ("siamese_cbis", (2, 150, 150, 1), {}, 3_977_345, 0),  # 003, section 6
    ("vgg16", (150, 150, 1), {}, 18_910_023, 14_714_688),  # 003, 5.3.1 and 5.4.1
    ("inception_v3", (150, 150, 1), {}, 31_240_999, 21_802_784),  # 003, 5.3.2
    ("inception_v3", (150, 150, 1), {"cut": "top+1", "head_units": (512, 256)},
     16_705_191, 10_674_848),  # 003, 5.4.2: "removing the top level and the one above"
]
# Document 002 prints no summary: these follow from its description (see MASS_CALC) at
# the CBIS NumPy release's 150x150, and pin the variants' shapes against drift.
MASS_CALC_WEIGHTS = [5_626_369, 5_626_369, 5_626_369, 2_083_425, 1_383_265, 1_383_265]


@pytest.mark.parametrize("family, shape, backbone, total, frozen", PUBLISHED)
def test_a_published_network_has_the_weight_count_its_document_prints(family, shape, backbone,
                                                                      total, frozen):
    config = ModelConfig(family=family,
                         backbone=BackboneConfig(weights=None).replace(**backbone))
    model = build_model({}, shape, config)
    assert (count_params(model), count_frozen(model)) == (total, frozen)


@pytest.mark.parametrize("variant", range(6))
def test_the_mass_calc_variants_keep_their_shapes(variant):
    model = build_model({}, (150, 150, 1), ModelConfig(family=f"mass_calc_m{variant}"))
    assert count_params(model) == MASS_CALC_WEIGHTS[variant]


def test_document_000s_hypermodel_is_three_blocks_and_a_256_over_i_head():
    model = build_model({"init": 10, "rate": 0.05, "depth": 3}, (60, 60, 1),
                        ModelConfig(family="microcal_hypermodel"))
    body = model.get_layer("body")
    convs = [layer for layer in body.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [10, 20, 40]
    assert all(isinstance(c.kernel_initializer, keras.initializers.GlorotNormal) for c in convs)
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in body.layers) == 3
    dense = [layer.units for layer in body.layers if isinstance(layer, keras.layers.Dense)]
    assert dense == [256, 128, 85, 1]
    rates = [layer.rate for layer in body.layers if isinstance(layer, keras.layers.Dropout)]
    assert rates == pytest.approx([0.05, 0.05, 0.05, 0.15])  # Dropout(rate + 0.1) after Flatten
    assert type(model.optimizer).__name__ == "Adam" and model.optimizer.beta_2 == 0.9999


def test_the_gray_to_rgb_adapter_is_a_learned_1x1_conv_or_a_replication():
    shape = (48, 48, 1)
    learned = build_model({}, shape, ModelConfig(family="vgg16", backbone=RANDOM))
    copied = build_model({}, shape, ModelConfig(
        family="vgg16", backbone=RANDOM.replace(adapter="replicate")))
    assert count_params(learned) - count_params(copied) == 6  # three 1x1 filters and biases
    x, _ = toy_data(shape, n=2)
    rgb = keras.Model(copied.get_layer("body").input,
                      copied.get_layer("body").get_layer("to_rgb").output)(x)
    np.testing.assert_array_equal(np.asarray(rgb), np.repeat(x, 3, axis=-1))


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
    pairs = family in PAIR_FAMILIES
    model = build_model({**HP, "family": family}, shape, SMALL, seed=0)
    x, y = toy_pairs(shape) if pairs else toy_data(shape)
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
    side = shape[1:3] if pairs else shape[:2]  # a pair's maps side by side
    assert cam.shape == (2, side[0], side[1] * (2 if pairs else 1))
    assert np.all((cam >= 0) & (cam <= 1))


def toy_pairs(shape: tuple, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (baseline, abnormal): the abnormal patch of class 1 has the bright spot."""
    baseline, _ = toy_data(shape[1:], n, seed=1)
    abnormal, y = toy_data(shape[1:], n, seed=2)
    return np.stack([baseline, abnormal], axis=1), y


@pytest.mark.parametrize("trunk", ["hypermodel", "microcal_cnn", "vgg16"])
def test_the_siamese_encoder_is_one_trunk_shared_by_both_patches(trunk):
    config = SMALL.replace(family="siamese", backbone=RANDOM.replace(cut="top+4"),
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
        build_model({"cut": "top+7"}, (60, 60, 1), ModelConfig(family="vgg16", backbone=RANDOM))


def test_inception_input_is_upsized_to_its_minimum_and_cut_levels_shrink_the_model():
    inception = ModelConfig(family="inception_v3", backbone=RANDOM)
    small = build_model({"cut": "top+8"}, (60, 60, 1), inception)
    assert small.get_layer("body").get_layer("upsize").output.shape[1:3] == (75, 75)
    with pytest.raises(ValueError, match="cut must be 'top' or 'top\\+k' with k < 9"):
        build_model({"cut": "top+9"}, (60, 60, 1), inception)
    vgg = {cut: count_params(build_model({"cut": cut}, (60, 60, 1), ModelConfig(
        family="vgg16", backbone=RANDOM.replace(pooling="avg")))) for cut in ("top", "top+2")}
    assert vgg["top+2"] < vgg["top"] / 5


def test_trainable_layers_freeze_the_backbone_from_the_bottom():
    config = ModelConfig(family="vgg16", backbone=RANDOM.replace(cut="top+3", trainable_layers=2))
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
    random = build_model({}, (60, 60, 1), ModelConfig(family="vgg16", backbone=RANDOM)
                         ).get_layer("body")
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
    config = ModelConfig(family=family, backbone=RANDOM.replace(cut="top+3", head_units=8))
    model = build_model({}, shape, config, seed=0)
    x, y = toy_data(shape, n=16)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    values, expected = deep_shap(model, x[:2], x[8:])
    probability = inference_model(model).predict(x[:2], verbose=0).ravel()
    np.testing.assert_allclose(values.sum(axis=(1, 2)), probability - expected, atol=1e-3)


def test_family_is_a_checked_config_key_and_search_dimension():
    quick = load_experiment("experiments/families_quick.yaml")
    assert quick.search_space["family"].values == (
        "hypermodel", "microcal_hypermodel", "microcal_cnn", "cbis_scratch", "mass_calc_m5",
        "vgg16")
    raw = quick.to_dict()
    for change, message in (
            ({"model": {**raw["model"], "family": "resnet"}}, "'model.family' must be one of"),
            ({"search_space": {"family": {"type": "choice", "values": ["vgg19"]}}},
             "search_space.family' must be a choice of")):
        with pytest.raises(ConfigError, match=message):
            experiment_from_dict({**raw, **change})
    vgg_only = quick.model.replace(family="vgg16")
    assert vgg_only.backbone.cut == "top+4"
