import itertools
from pathlib import Path

import keras
import numpy as np
import pytest

from mammo_core.config import ModelConfig, load_experiment
from mammo_core.hypermodel import RandomContrastAroundMean, RandomRot90, build_model

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = load_experiment(ROOT / "experiments" / "microcal.yaml")
CORNERS = [dict(zip(EXPERIMENT.search_space, values)) for values in
           itertools.product(*(s.corners() for s in EXPERIMENT.search_space.values()))]


@pytest.mark.parametrize("hp", CORNERS, ids=lambda hp: "-".join(f"{k}={v}" for k, v in hp.items()))
def test_every_corner_of_the_space_builds_and_fits_one_step(hp):
    model = build_model(hp, (60, 60, 1), EXPERIMENT.model, seed=0)
    x = np.random.default_rng(0).random((8, 60, 60, 1), dtype=np.float32)
    y = np.array([0, 1] * 4)
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert model.output_shape == (None, 1)
    dense = [layer for layer in model.layers if layer.name.startswith("dense_")]
    assert len(dense) == int(hp["depth"])
    assert model.get_layer("conv_0").filters == int(hp["init"])
    assert model.get_layer("conv_2").filters == 4 * int(hp["init"])
    assert model.get_layer("bn_0").momentum == EXPERIMENT.model.batchnorm_momentum


def test_space_has_corners_for_every_dimension():
    assert len(CORNERS) == 2 ** len(EXPERIMENT.search_space)


def test_augmentation_acts_only_in_training():
    model = build_model(EXPERIMENT.hyperparameters, (60, 60, 1), EXPERIMENT.model)
    aug = model.get_layer("augmentation")
    x = np.random.default_rng(1).random((16, 60, 60, 1), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(aug(x, training=False)), x)
    assert not np.allclose(np.asarray(aug(x, training=True)), x)


def test_rot90_gives_exact_right_angle_rotations():
    x = np.arange(4 * 5 * 5, dtype=np.float32).reshape(4, 5, 5, 1)
    out = np.asarray(RandomRot90(seed=3)(x, training=True))
    for original, rotated in zip(x[..., 0], out[..., 0]):
        assert any(np.array_equal(np.rot90(original, k), rotated) for k in range(4))


def test_contrast_keeps_mean_and_does_not_clip():
    x = np.random.default_rng(2).normal(size=(4, 6, 6, 1)).astype(np.float32) - 3
    out = np.asarray(RandomContrastAroundMean(0.5, seed=0)(x, training=True))
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), atol=1e-5)
    assert out.min() < 0


@pytest.mark.parametrize("scale, low, high", [("uniform", 0.5, 1.5), ("log_uniform", 2 / 3, 1.5)])
def test_contrast_factors_span_the_configured_range(scale, low, high):
    """Each image's deviation from its mean is scaled by one factor; uniform draws them in
    [1 - f, 1 + f], log_uniform in [1 / (1 + f), 1 + f] with log-factors centred on 0."""
    x = np.random.default_rng(4).normal(size=(4000, 4, 4, 1)).astype(np.float32)
    out = np.asarray(RandomContrastAroundMean(0.5, seed=1, scale=scale)(x, training=True))
    centred = x - x.mean(axis=(1, 2, 3), keepdims=True)
    factors = (out - x.mean(axis=(1, 2, 3), keepdims=True))[:, 0, 0, 0] / centred[:, 0, 0, 0]
    assert factors.min() >= low - 1e-3 and factors.max() <= high + 1e-3
    assert factors.min() < low + 0.02 and factors.max() > high - 0.02
    if scale == "log_uniform":
        assert abs(np.median(np.log(factors))) < 0.03


def test_model_round_trips_through_keras_file(tmp_path):
    model = build_model(EXPERIMENT.hyperparameters, (60, 60, 1), EXPERIMENT.model)
    x = np.random.default_rng(3).random((4, 60, 60, 1), dtype=np.float32)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_other_input_sizes_and_poolings():
    for pooling in ("flatten", "avg", "max"):
        config = ModelConfig(pooling=pooling)
        model = build_model(EXPERIMENT.hyperparameters, (128, 128, 1), config)
        assert model.output_shape == (None, 1)
    with pytest.raises(ValueError, match="square"):
        build_model(EXPERIMENT.hyperparameters, (60, 40, 1), ModelConfig())


def test_rotation_by_steps_turns_by_multiples_of_the_step_in_training_only():
    from mammo_core.hypermodel import RandomRotationSteps

    x = np.zeros((64, 9, 9, 1), np.float32)
    x[:, 1, 4, 0] = 1.0  # a dot above the centre
    quarter = RandomRotationSteps(90.0, seed=0)
    np.testing.assert_array_equal(quarter(x, training=False), x)
    turned = np.asarray(quarter(x, training=True))
    spots = {tuple(np.argwhere(image[..., 0] > 0.5)[0]) for image in turned}
    assert spots == {(1, 4), (4, 7), (7, 4), (4, 1)}  # exactly the four right angles
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(np.random.default_rng(0).random((21, 21)), 2)
    smooth = np.repeat(smooth[None, :, :, None], 16, axis=0).astype(np.float32)
    fine = np.asarray(RandomRotationSteps(2.0, seed=1)(smooth, training=True))[..., 0]
    rows, cols = np.indices((21, 21))
    inside = (rows - 10) ** 2 + (cols - 10) ** 2 < 8 ** 2  # away from the filled corners
    references = np.stack([ndimage.rotate(smooth[0, ..., 0], 2 * k, reshape=False, order=1)
                           for k in range(180)])
    matched = [np.abs(references[:, inside] - image[inside]).max(axis=1) for image in fine]
    assert max(m.min() for m in matched) < 1e-4  # each image: one multiple of 2 degrees
    assert len({int(m.argmin()) for m in matched}) > 8  # and many of them
    config = ModelConfig(augmentation=ModelConfig().augmentation.replace(rotate_degrees=2.0))
    model = build_model({"init": 4, "rate": 0.0, "depth": 1, "learning_rate": 1e-3},
                        (16, 16, 1), config)
    assert any(isinstance(layer, RandomRotationSteps)
               for layer in model.get_layer("augmentation").layers)
