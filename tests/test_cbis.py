"""The CBIS-DDSM NumPy reader: labels per task, pairs as groups, sizes and broken files."""
from __future__ import annotations

import numpy as np
import pytest
from collection_fixtures import write_cbis_arrays

from mammo_core.config import CrossValidationConfig, DataConfig, SplitConfig
from mammo_core.data import load_dataset
from mammo_core.errors import DataError
from mammo_core.folds import make_fold_plan

MASS_VS_CALC = {"1": 0, "2": 0, "3": 1, "4": 1}
FIVE_CLASSES = {str(k): k for k in range(5)}


def config(**overrides) -> DataConfig:
    return DataConfig(**({"layout": "cbis_npy", "image_size": (48, 48),
                          "label_map": MASS_VS_CALC} | overrides))


def test_abnormal_patches_only_with_the_task_labels(tmp_path):
    root = write_cbis_arrays(tmp_path, {"train": 8, "test": 4})
    dataset = load_dataset(root, config())
    assert dataset.images.shape == (12, 48, 48) and dataset.bit_depth == 16
    source = np.concatenate([np.load(root / "test_labels.npy"), np.load(root / "train_labels.npy")])
    abnormal = source[source > 0]
    np.testing.assert_array_equal(dataset.labels, (abnormal >= 3).astype(int))
    # the stored 16-bit integers come back exactly
    stored = np.load(root / "test_images.npy")[1]
    np.testing.assert_array_equal(dataset.stored_pixels()[0], stored)


def test_a_pair_is_one_group_on_one_side_of_every_split(tmp_path):
    root = write_cbis_arrays(tmp_path, {"train": 30, "test": 10})
    dataset = load_dataset(root, config(label_map={"0": 0, "1": 1, "2": 1, "3": 1, "4": 1}))
    assert len(dataset.labels) == 80
    np.testing.assert_array_equal(dataset.cases[0::2], dataset.cases[1::2])
    assert len(set(dataset.cases)) == 40  # train and test patients are distinct groups
    plan = make_fold_plan(dataset, SplitConfig(), CrossValidationConfig())
    for fold in plan.folds:
        part_of = np.full(len(dataset.labels), "", dtype=object)
        for name, index in (("holdout", plan.holdout), ("train", fold.train),
                            ("val", fold.val), ("test", fold.test)):
            part_of[index] = name
        # baseline (even) and abnormal (odd) patch of every patient: always the same part
        np.testing.assert_array_equal(part_of[0::2], part_of[1::2])


def test_five_classes_keep_every_patch(tmp_path):
    dataset = load_dataset(write_cbis_arrays(tmp_path, {"train": 8}), config(label_map=FIVE_CLASSES))
    assert sorted(set(dataset.labels.tolist())) == [0, 1, 2, 3, 4]
    assert (dataset.labels[0::2] == 0).all()


def test_names_from_the_config_and_a_channel_axis(tmp_path):
    root = write_cbis_arrays(tmp_path, {"train": 4})
    images = np.load(root / "train_images.npy")[..., np.newaxis]
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", np.load(root / "train_labels.npy"))
    dataset = load_dataset(tmp_path, config(npy_files={"mine": ("x.npy", "y.npy")}))
    assert len(dataset.labels) == 4 and dataset.partitions[0] == "mine"


def test_size_is_taken_from_the_arrays_and_checked(tmp_path):
    root = write_cbis_arrays(tmp_path, {"train": 4}, size=(40, 40))
    with pytest.raises(DataError, match=r"patches are 40x40.*expects 48x48"):
        load_dataset(root, config())
    resized = load_dataset(root, config(resize=True))
    assert resized.images.shape[1:] == (48, 48)


@pytest.mark.parametrize("damage, message", [
    ("odd", "odd count"), ("pair", "pair 1 .*expected a baseline"),
    ("length", "expected 8 labels"), ("range", r"labels must lie in 0..4"),
    ("corrupt", "cannot read NumPy array"), ("missing", "missing file"),
    ("dtype", "expected 8- or 16-bit integers or floats")])
def test_broken_arrays_are_named(tmp_path, damage, message):
    root = write_cbis_arrays(tmp_path, {"train": 4})
    images, labels = np.load(root / "train_images.npy"), np.load(root / "train_labels.npy")
    if damage == "odd":
        np.save(root / "train_images.npy", images[:7])
        np.save(root / "train_labels.npy", labels[:7])
    elif damage == "pair":
        labels[2] = 2
        np.save(root / "train_labels.npy", labels)
    elif damage == "length":
        np.save(root / "train_labels.npy", labels[:6])
    elif damage == "range":
        labels[1] = 7
        np.save(root / "train_labels.npy", labels)
    elif damage == "corrupt":
        (root / "train_images.npy").write_bytes(b"\x93NUMPY garbage")
    elif damage == "missing":
        (root / "train_labels.npy").unlink()
    else:
        np.save(root / "train_images.npy", images.astype(np.float64) * 3)
    with pytest.raises(DataError, match=message) as err:
        load_dataset(root, config())
    assert "train_" in str(err.value)


def test_a_folder_without_arrays_says_what_it_expected(tmp_path):
    with pytest.raises(DataError, match=r"no \*_images.npy"):
        load_dataset(tmp_path, config())


def test_float_arrays_in_unit_range_are_accepted(tmp_path):
    root = write_cbis_arrays(tmp_path, {"train": 4})
    np.save(root / "train_images.npy", np.load(root / "train_images.npy") / 65535.0)
    dataset = load_dataset(root, config())
    assert dataset.images.max() <= 1 and len(dataset.labels) == 4


def test_a_task_without_a_label_map_is_a_config_error():
    from mammo_core.config import ConfigError, experiment_from_dict

    with pytest.raises(ConfigError, match="label_map"):
        experiment_from_dict({"name": "x", "data": {"layout": "cbis_npy"}, "hyperparameters":
                              {"init": 1, "rate": 0, "depth": 1, "learning_rate": 1e-3}})


def test_pairs_keep_baseline_and_abnormal_together_labelled_by_the_abnormal(tmp_path):
    root = write_cbis_arrays(tmp_path, {"train": 8})
    dataset = load_dataset(root, config(pairs=True))
    images, labels = np.load(root / "train_images.npy"), np.load(root / "train_labels.npy")
    assert dataset.images.shape == (8, 2, 48, 48)
    np.testing.assert_array_equal(dataset.stored_pixels()[3], images[6:8])
    np.testing.assert_array_equal(dataset.labels, (labels[1::2] >= 3).astype(int))
    assert dataset.paths[3].endswith("train_images.npy#6,7") and dataset.cases[3] == "train/3"
