"""The CBIS-DDSM archive reader (mammo_core/readers/cbis_dicom.py) on a folder written in
the layout the archive's download tool produces, with the eight real full fields."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from dicom_fixtures import write_cbis_archive, write_dicom

from mammo_core.config import ConfigError, CrossValidationConfig, DataConfig, SplitConfig
from mammo_core.data import load_dataset
from mammo_core.errors import DataError
from mammo_core.folds import make_fold_plan
from mammo_core.readers.cbis_dicom import mask_box, read_case_descriptions, window

MASS_CALC = {"mass": 0, "calcification": 1}
PATHOLOGY = {"BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0, "MALIGNANT": 1}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return write_cbis_archive(tmp_path_factory.mktemp("cbis") / "archive")


@pytest.fixture
def copy(archive, tmp_path) -> Path:
    """A copy of the archive a test may damage."""
    return Path(shutil.copytree(archive, tmp_path / "archive"))


def config(**changes) -> DataConfig:
    return DataConfig(**{"layout": "cbis_dicom", "label_map": MASS_CALC, "image_size": (48, 48),
                         "filename_pattern": None, "download_url": None} | changes)


def test_both_csv_flavours_are_read_with_their_partitions(archive):
    rows = read_case_descriptions(archive, config())
    kinds = {(r.kind, r.partition) for r in rows}
    assert kinds == {("Mass", "Training"), ("Mass", "Test"), ("Calc", "Training"), ("Calc", "Test")}
    assert {r.abnormality_type for r in rows if r.kind == "Calc"} == {"calcification"}


def test_crops_are_labelled_by_abnormality_type_and_grouped_by_patient(archive):
    data = load_dataset(archive, config())
    assert data.images.shape[1:] == (48, 48) and len(data.labels) == 48
    assert np.bincount(data.labels).tolist() == [28, 20]  # 10 + 2 real mass patients, 10 calc
    assert set(data.partitions) == {"train", "test"}
    assert data.notes["dicom_transfer_syntaxes"] == "Explicit VR Little Endian, RLE Lossless"


def test_each_real_patients_four_views_are_one_group(archive):
    data = load_dataset(archive, config(cbis_task="whole", label_map=PATHOLOGY,
                                        image_size=(64, 64)))
    for patient in ("P_00173", "P_00820"):
        views = [p for p, c in zip(data.paths, data.cases) if c == patient]
        assert len(views) == 4
    plan = make_fold_plan(data, SplitConfig(group_by="case"),
                          CrossValidationConfig(n_folds=2, holdout_fraction=0.2))
    for patient in set(data.cases.tolist()):  # a patient's images sit in one part of each fold
        rows = np.flatnonzero(data.cases == patient)
        for fold in plan.folds:
            assert len({("train" if r in fold.train else "other") for r in rows}) == 1


def test_a_swapped_crop_and_mask_are_told_apart_by_content(archive):
    """The first abnormality's crop sits in the "ROI mask images" series (and the mask in
    the crop's): the crop task still reads the crop, not a two-valued mask."""
    data = load_dataset(archive, config())
    first = [i for i, p in enumerate(data.paths) if "P_01000_LEFT_CC_1" in p]
    assert len(first) == 1 and "ROI mask images" in data.paths[first[0]]
    assert len(np.unique(data.images[first[0]])) > 10


def test_roi_patches_are_cut_around_the_mask(archive):
    crops = load_dataset(archive, config())
    rois = load_dataset(archive, config(cbis_task="roi", roi_patch_size=8, roi_margin=0.0))
    assert len(rois.labels) == len(crops.labels)
    # margin 0: the window is the mask's 32-pixel box, inside the 48-pixel crop's centre
    same = [i for i, p in enumerate(rois.paths) if "P_01002" in p]
    assert same and all(rois.images[i].std() > 0 for i in same)
    assert mask_box(np.pad(np.ones((4, 6)), 2), (16, 20)) == (4, 4, 12, 16)  # x2
    image = np.arange(100.0).reshape(10, 10)
    assert window(image, (0, 0, 2, 2), 0.5, 4).shape == (4, 4)  # shifted inside the image
    assert window(image, (4, 4, 6, 6), 0.0, 1)[0, 0] == 44


def test_benign_without_callback_is_a_config_choice(archive):
    both = load_dataset(archive, config(label_map=PATHOLOGY))
    only = load_dataset(archive, config(label_map={"BENIGN": 0, "MALIGNANT": 1}))
    assert len(only.labels) == len(both.labels) - 10  # 5 patients x 2 views left out


def test_a_label_map_of_both_vocabularies_is_refused():
    with pytest.raises((ConfigError, ValueError), match="not both"):
        config(label_map={"mass": 0, "MALIGNANT": 1})


def test_a_missing_file_is_reported_and_stops_unless_allowed(copy):
    crop = next(p for p in copy.rglob("*.dcm") if "P_01003_RIGHT_MLO_1" in str(p)
                and "cropped images" in str(p))
    shutil.rmtree(crop.parent)
    with pytest.raises(DataError) as err:
        load_dataset(copy, config())
    text = str(err.value)
    assert "1 case-description row(s) without their files" in text
    assert "calc_case_description_train_set.csv, line" in text and "P_01003_RIGHT_MLO_1" in text
    assert "data.allow_missing" in text
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(copy, config(allow_missing=True))
    assert len(data.labels) == 47 and data.notes["rows_left_out"] == "1"
    assert any("going on without" in str(w.message) for w in caught)


def test_a_file_no_row_names_is_reported(copy):
    write_dicom(copy / "CBIS-DDSM" / "stray" / "1-1.dcm", np.zeros((8, 8), np.uint16),
                "Mass-Training_P_09999_LEFT_CC")
    with pytest.raises(DataError, match="1 DICOM file.s. that no case-description row names"):
        load_dataset(copy, config())
    assert len(load_dataset(copy, config(allow_missing=True)).labels) == 48


def test_a_bad_pathology_value_names_its_row(copy):
    csv = copy / "mass_case_description_train_set.csv"
    lines = csv.read_text().splitlines()
    lines[2] = lines[2].replace("MALIGNANT", "MALIGANT").replace("BENIGN", "BENIGN?")
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"mass_case_description_train_set.csv, line 3: "
                                        r"pathology 'MALIG|BENIGN\?"):
        load_dataset(copy, config())


def test_a_csv_without_a_required_column_is_refused(copy):
    csv = copy / "calc_case_description_test_set.csv"
    csv.write_text(csv.read_text().replace("pathology", "diagnosis", 1))
    with pytest.raises(DataError, match="calc_case_description_test_set.csv: no column"):
        load_dataset(copy, config())


def test_the_train_description_counts_patients_images_and_abnormalities(archive):
    from mammo_core.config import load_experiment
    from tune.train import parts_description

    experiment = load_experiment(Path(__file__).resolve().parents[1]
                                 / "experiments/cbis_dicom_mass_vs_calc_quick.yaml")
    data = load_dataset(archive, experiment.data)
    train, test = np.flatnonzero(data.partitions == "train"), np.flatnonzero(data.partitions == "test")
    text = parts_description(experiment, data, {"train": train, "test": test})
    patients = len(np.unique(data.cases[test]))
    assert f"- test: {len(test)} images, {patients} patients, {len(test)} abnormalities" in text
