from pathlib import Path

import pytest
import yaml

from mammo_core.config import (ConfigError, Experiment, experiment_from_dict, flat_params,
                               load_experiment)

ROOT = Path(__file__).resolve().parents[1]


def base() -> dict:
    return yaml.safe_load((ROOT / "experiments" / "microcal_quick.yaml").read_text())


@pytest.mark.parametrize("name", ["microcal.yaml", "microcal_quick.yaml"])
def test_shipped_experiments_load(name):
    experiment = load_experiment(ROOT / "experiments" / name)
    assert isinstance(experiment, Experiment)
    assert set(experiment.search_space) == {"init", "rate", "depth", "learning_rate"}
    assert experiment.search_space["learning_rate"].low == pytest.approx(1e-4 if name == "microcal.yaml" else 1e-3)


def test_default_search_space_is_the_studys():
    space = load_experiment(ROOT / "experiments" / "microcal.yaml").search_space
    assert space["init"].values == (10, 20, 30)
    assert space["rate"].values == (0.0, 0.05)
    assert space["depth"].values == (1, 2, 3)


def test_unknown_key_is_named():
    raw = base()
    raw["preprocessing"]["wavelet"]["famly"] = "haar"
    with pytest.raises(ConfigError, match=r"preprocessing\.wavelet\.famly"):
        experiment_from_dict(raw)


def test_unknown_top_level_key_is_named():
    raw = base() | {"epochs": 3}
    with pytest.raises(ConfigError, match="unknown config key 'epochs'"):
        experiment_from_dict(raw)


@pytest.mark.parametrize("path, value, expected", [
    (("training", "epochs"), "ten", "training.epochs"),
    (("training", "epochs"), True, "training.epochs"),
    (("preprocessing", "wavelet", "enabled"), "yes", "preprocessing.wavelet.enabled"),
    (("data", "image_size"), [60], "data.image_size"),
    (("split", "group_by"), "patient", "split.group_by"),
])
def test_wrong_type_is_named(path, value, expected):
    raw = base()
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        experiment_from_dict(raw)


def test_value_rules():
    raw = base()
    raw["split"]["test_fraction"] = 1.5
    with pytest.raises(ConfigError, match="split.test_fraction"):
        experiment_from_dict(raw)
    raw = base()
    raw["search_space"]["width"] = {"type": "choice", "values": [1]}
    with pytest.raises(ConfigError, match="search_space.width"):
        experiment_from_dict(raw)
    raw = base()
    raw["search_space"]["learning_rate"] = {"type": "loguniform", "low": 0.1, "high": 0.01}
    with pytest.raises(ConfigError, match="low < high"):
        experiment_from_dict(raw)
    raw = base()
    raw["data"]["classes"] = {"0": 0}
    with pytest.raises(ConfigError, match="at least two"):
        experiment_from_dict(raw)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(bad)


def test_flat_params_and_fingerprint_are_stable():
    first, second = experiment_from_dict(base()), experiment_from_dict(base())
    params = flat_params(first)
    assert params["preprocessing.wavelet.family"] == "sym3"
    assert params["hyperparameters.init"] == "8"
    assert first.fingerprint() == second.fingerprint()
    changed = base()
    changed["training"]["epochs"] = 3
    assert experiment_from_dict(changed).fingerprint() != first.fingerprint()


def test_scientific_notation_strings_become_floats():
    raw = base()
    raw["hyperparameters"]["learning_rate"] = "1e-3"
    assert experiment_from_dict(raw).hyperparameters["learning_rate"] == pytest.approx(1e-3)


STUDIES = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml")
                 if not p.stem.startswith(("microcal", "wavelet", "families")))


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_config_loads_and_names_its_model_after_the_task(name):
    experiment = load_experiment(ROOT / "experiments" / f"{name}.yaml")
    task = name.removesuffix("_quick")
    assert experiment.tracking.registered_model_name == task
    assert experiment.data.n_classes == (5 if task == "cbis_5class" else 2)
    assert (ROOT / "experiments" / f"{task}_quick.yaml").is_file()


def test_pairs_and_the_siamese_family_go_together():
    raw = base()
    raw["data"] |= {"layout": "cbis_npy", "label_map": {1: 0, 3: 1}, "pairs": True}
    with pytest.raises(ConfigError, match="'model.family' must be one of \\['siamese', 'siamese_cbis'\\]"):
        experiment_from_dict(raw)
    raw["model"]["family"] = "siamese"
    raw["model"]["siamese"] = {"trunk": "siamese"}
    with pytest.raises(ConfigError, match="model.siamese.trunk"):
        experiment_from_dict(raw)
    raw["model"]["siamese"] = {"trunk": "microcal_cnn"}
    assert experiment_from_dict(raw).data.pairs
    raw["data"]["pairs"] = False
    with pytest.raises(ConfigError, match="siamese family takes pairs"):
        experiment_from_dict(raw)


def test_a_class_balancing_typo_is_named():
    raw = base()
    raw["training"]["class_balance"] = "smote"
    with pytest.raises(ConfigError, match="training.class_balance"):
        experiment_from_dict(raw)


def study(name: str) -> dict:
    return yaml.safe_load((ROOT / "experiments" / f"{name}.yaml").read_text())


def changed(raw: dict, path: tuple, value) -> dict:
    node = raw
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return raw


@pytest.mark.parametrize("path, value, expected", [
    # NaN passed `threshold_k < 0` and zeroed every detail band: blank inputs
    (("preprocessing", "wavelet", "threshold_k"), float("nan"), "threshold_k': .*finite"),
    (("training", "threshold"), 2, r"training\.threshold"),
    (("training", "batch_size"), 0, r"training\.batch_size"),
    (("model", "augmentation", "contrast"), -0.5, r"model\.augmentation\.contrast"),
    (("model", "augmentation", "contrast"), 1.5, "below 1 with contrast_scale uniform"),
    (("explanations", "partition_max_evals"), float("inf"), "partition_max_evals"),
    (("training", "monitor"), "val_accuracy", r"training\.monitor.*'val_auc' or 'val_loss'"),
    (("model", "backbone", "cut"), "bottom", r"model\.backbone\.cut"),
])
def test_impossible_numbers_and_names_are_refused(path, value, expected):
    with pytest.raises(ConfigError, match=expected):
        experiment_from_dict(changed(base(), path, value))


@pytest.mark.parametrize("fraction", [0.4, 0.45, 0.7, 0.9])
def test_a_split_fraction_the_splitter_would_round_is_refused(fraction):
    # a grouped split cuts 1/n of the groups: these were silently turned into 0.5
    for path in (("split", "test_fraction"), ("cross_validation", "holdout_fraction")):
        with pytest.raises(ConfigError, match=f"{'.'.join(path)}.*1/n.*got {fraction}"):
            experiment_from_dict(changed(base(), path, fraction))
    assert experiment_from_dict(changed(base(), ("split", "test_fraction"), 0.25))


@pytest.mark.parametrize("name, labels, expected", [
    # a sigmoid trained on target 2 failed with an IndexError after the whole search
    ("cbis_benign_vs_malignant_quick", {"1": 1, "2": 2, "3": 1, "4": 2}, r"0\.\.1, each used"),
    # a typo silently dropped a class
    ("cbis_mass_vs_calc_quick", {"1": 0, "2": 0, "44": 1}, r"\['44'\], not a cbis_npy"),
    ("mias_roi_patches_quick", {"NORM": 0, "CALCS": 1}, r"\['CALCS'\], not a mias"),
])
def test_label_maps_must_be_0_to_k_and_name_known_source_labels(name, labels, expected):
    with pytest.raises(ConfigError, match=expected):
        experiment_from_dict(changed(study(name), ("data", "label_map"), labels))


def test_class_folders_map_to_0_to_k_too():
    with pytest.raises(ConfigError, match=r"'data\.classes' values must be the task labels"):
        experiment_from_dict(changed(base(), ("data", "classes"), {"0": 1, "1": 2}))


def test_replace_checks_the_change_like_a_loaded_file():
    experiment = experiment_from_dict(base())
    assert experiment.training.replace(epochs=7).epochs == 7
    with pytest.raises(ValueError, match="batch_size"):
        experiment.training.replace(batch_size=0)
