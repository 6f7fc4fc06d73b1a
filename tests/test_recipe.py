"""Training recipes: each preset's defaults are its publication's; configs and searches
override them field by field."""
from __future__ import annotations

import keras
import pytest

from mammo_core.config import (ConfigError, ModelConfig, OptimizerConfig, TrainingConfig,
                               experiment_from_dict, load_experiment)
from mammo_core.families import build_model, recipe_for
from mammo_core.recipe import PUBLISHED, EarlyStop, resolve
from mammo_core.registry import FAMILIES


def test_every_family_has_a_recipe():
    assert set(PUBLISHED) == set(FAMILIES)


@pytest.mark.parametrize("family, expected", [
    # 004: Adam 1e-3, batch 128, 100 epochs, EarlyStopping(val_loss, patience 3, restore)
    ("mias_cnn", dict(optimizer="adam", learning_rate=1e-3, batch_size=128, epochs=100,
                      early_stopping=EarlyStop("val_loss", 3, True))),
    # 002, M3-M5: RMSprop(learning_rate=0.001, decay=1e-3), batch 128, early stopping
    *[(f"mass_calc_m{k}", dict(optimizer="rmsprop", learning_rate=1e-3, decay=1e-3,
                               batch_size=128)) for k in (3, 4, 5)],
    # 002, M0-M2: before those changes, no early stopping
    *[(f"mass_calc_m{k}", dict(optimizer="adam", batch_size=32, early_stopping=None))
      for k in (0, 1, 2)],
    # 003: SCRATCH_6 RMSprop 1e-3 35 epochs; VGG16_V5 15 and INCEPTION_5 20 epochs of Adam
    ("cbis_scratch", dict(optimizer="rmsprop", learning_rate=1e-3, epochs=35, decay=0.0)),
    ("vgg16", dict(optimizer="adam", learning_rate=1e-3, epochs=15)),
    ("inception_v3", dict(optimizer="adam", learning_rate=1e-3, epochs=20)),
    ("siamese_cbis", dict(epochs=50)),
    # 000: Adam 1e-3 with beta_2 0.9999
    ("microcal_hypermodel", dict(optimizer="adam", learning_rate=1e-3, beta_2=0.9999)),
])
def test_a_preset_trains_with_its_documents_recipe(family, expected):
    recipe = resolve(family, {})
    assert {key: getattr(recipe, key) for key in expected} == expected
    if family.startswith("mass_calc_m") and family[-1] in "345":
        assert recipe.early_stopping is not None  # M3 "Early stopping"


def test_rmsprop_with_keras_2_decay_divides_the_step_by_one_plus_decay_times_t():
    model = build_model({}, (48, 48, 1), ModelConfig(family="mass_calc_m3"))
    assert isinstance(model.optimizer, keras.optimizers.RMSprop)
    schedule = model.optimizer._learning_rate
    for step in (0, 10, 1000):
        assert float(schedule(step)) == pytest.approx(1e-3 / (1 + 1e-3 * step), rel=1e-5)


def test_config_overrides_then_the_trials_hyperparameters():
    training = TrainingConfig(batch_size=16, early_stopping_patience=7)
    optimizer = OptimizerConfig(name="sgd", learning_rate=0.05, momentum=0.9)
    recipe = resolve("mias_cnn", {}, optimizer, training)
    assert (recipe.optimizer, recipe.learning_rate, recipe.momentum, recipe.batch_size) == \
        ("sgd", 0.05, 0.9, 16)
    assert recipe.early_stopping == EarlyStop("val_loss", 7, True)  # the monitor stays 004's
    assert recipe.epochs == 100  # not overridden
    searched = resolve("mias_cnn", {"optimizer": "rmsprop", "learning_rate": 3e-4,
                                    "batch_size": 64}, optimizer, training)
    assert (searched.optimizer, searched.learning_rate, searched.batch_size) == \
        ("rmsprop", 3e-4, 64)
    assert resolve("mias_cnn", {}, training=TrainingConfig(early_stopping=False)) \
        .early_stopping is None
    model = build_model({"optimizer": "sgd"}, (128, 128, 1), ModelConfig(family="mias_cnn"))
    assert isinstance(model.optimizer, keras.optimizers.SGD)


def test_the_recipe_is_logged_as_params():
    params = resolve("mass_calc_m4", {}).params()
    assert params["recipe.optimizer"] == "rmsprop" and params["recipe.decay"] == "0.001"
    assert params["recipe.batch_size"] == "128"
    assert params["recipe.early_stopping"] == "val_loss patience 5 restore best"
    assert resolve("vgg16", {}).params()["recipe.early_stopping"] == "none"


def test_the_optimizer_is_a_checked_search_dimension_and_config_key():
    raw = load_experiment("experiments/families_quick.yaml").to_dict()
    raw["search_space"]["optimizer"] = {"type": "choice", "values": ["adam", "rmsprop"]}
    assert experiment_from_dict(raw).search_space["optimizer"].values == ("adam", "rmsprop")
    raw["search_space"]["optimizer"] = {"type": "choice", "values": ["adamw"]}
    with pytest.raises(ConfigError, match="search_space.optimizer' must be a choice of"):
        experiment_from_dict(raw)
    del raw["search_space"]["optimizer"]
    raw["model"]["optimizer"] = {"name": "adagrad"}
    with pytest.raises(ConfigError, match="model.optimizer.name"):
        experiment_from_dict(raw)


def test_recipe_for_reads_the_family_the_trial_names():
    experiment = load_experiment("experiments/families_quick.yaml")
    recipe = recipe_for({"family": "mass_calc_m5"}, experiment.model, experiment.training)
    assert recipe.optimizer == "rmsprop"
    assert recipe.batch_size == experiment.training.batch_size  # the config's override


@pytest.mark.parametrize("config, total, frozen", [
    ("cbis_vgg16_mass_vs_calc", 18_910_023, 14_714_688),
    ("cbis_vgg16_benign_vs_malignant", 18_910_023, 14_714_688),
    ("cbis_inception_mass_vs_calc", 31_240_999, 21_802_784),
    ("cbis_inception_benign_vs_malignant", 16_705_191, 10_674_848),
])
def test_each_transfer_experiment_of_the_report_builds_its_printed_model(config, total,
                                                                          frozen):
    from mammo_core.families import count_frozen, count_params

    experiment = load_experiment(f"experiments/published/{config}.yaml")
    assert experiment.model.backbone.weights == "imagenet"
    offline = experiment.model.replace(backbone=experiment.model.backbone.replace(weights=None))
    model = build_model(experiment.hyperparameters, (*experiment.data.image_size, 1), offline)
    assert (count_params(model), count_frozen(model)) == (total, frozen)
