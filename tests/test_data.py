
import numpy as np
import pytest
from PIL import Image

from conftest import make_dataset, write_image
from mammo_core.config import DataConfig
from mammo_core.data import load_dataset
from mammo_core.dataset import summarize
from mammo_core.errors import DataError, FileNameError
from mammo_core.images import read_image


def test_real_shared_data(shared_data, data_config):
    dataset = load_dataset(shared_data, data_config)
    assert dataset.images.shape == (797, 60, 60)
    assert dataset.images.dtype == np.float32 and dataset.bit_depth == 8
    assert 0 <= dataset.images.min() and dataset.images.max() <= 1
    # hashed as the stored 8-bit integers: the same fingerprint as stores made before
    assert dataset.fingerprint() == "784f5317523de870"
    assert (dataset.labels == 0).sum() == 414 and (dataset.labels == 1).sum() == 383
    assert len(set(dataset.cases)) == 103
    assert len(set(dataset.rois)) == 314
    assert len(set(dataset.duplicate_groups)) == 797 - 14  # 14 pairs of exact duplicates
    summary = summarize(dataset, data_config.class_names)
    assert summary["normal"] == {"images": 414, "cases": 30, "rois": 115, "duplicate_groups": 0}
    assert summary["microcalcification"]["duplicate_groups"] == 14
    assert summary["all"]["cases"] == 103


def test_known_duplicate_pair_shares_a_group(shared_data, data_config):
    dataset = load_dataset(shared_data, data_config)
    index = {path.split("/")[-1]: i for i, path in enumerate(dataset.paths)}
    a, b = index["0042u1_3_1_1.pgm_1.png"], index["0227u1_3_1_1.pgm_1.png"]
    assert dataset.duplicate_groups[a] == dataset.duplicate_groups[b]
    assert dataset.cases[a] != dataset.cases[b]


def test_case_and_roi_parsed_from_name(tiny_dataset, data_config):
    dataset = load_dataset(tiny_dataset, data_config)
    assert dataset.cases[0] == "0100"
    assert dataset.rois[0] == "0100s1_1_1"


def test_pgm_files(tmp_path, data_config):
    make_dataset(tmp_path, suffix=".pgm")
    dataset = load_dataset(tmp_path, data_config)
    assert len(dataset.labels) == 8 and dataset.bit_depth == 8


def test_sixteen_bit_files(tmp_path, data_config):
    make_dataset(tmp_path / "png16", dtype=np.uint16)
    dataset = load_dataset(tmp_path / "png16", data_config)
    assert dataset.images.dtype == np.float32 and dataset.bit_depth == 16
    assert dataset.images.max() == 1.0
    make_dataset(tmp_path / "pgm16", dtype=np.uint16, suffix=".pgm")
    assert load_dataset(tmp_path / "pgm16", data_config).images.max() == 1.0


def test_each_image_is_scaled_by_its_own_bit_depth_before_stacking(tmp_path, data_config):
    """The same patches as 8-bit files and as 16-bit (x257) files in one data set."""
    make_dataset(tmp_path / "mixed")
    eight = sorted((tmp_path / "mixed").rglob("*.png"))
    for path in eight[::2]:  # every other file becomes 16-bit, in both classes
        pixels = np.asarray(Image.open(path), dtype=np.uint16) * 257
        write_image(path.with_name(path.name.replace(".pgm_1", ".pgm_2")), pixels)
        path.unlink()
    write_image(tmp_path / "mixed" / "1" / "0300s1_1_1.pgm_1.pgm",  # PGM, maxval 65535
                np.full((60, 60), 32896, np.uint16))
    mixed = load_dataset(tmp_path / "mixed", data_config)
    eight_bit = load_dataset(make_dataset(tmp_path / "eight"), data_config)
    assert sorted(mixed.bit_depths.tolist()) == [8] * 4 + [16] * 5 and mixed.bit_depth == 16
    order = np.argsort([p.split("/")[-1].replace(".pgm_2", ".pgm_1") for p in mixed.paths])
    np.testing.assert_allclose(mixed.images[order][:8], eight_bit.images, atol=1e-7)
    assert mixed.images[order][8].max() == pytest.approx(128 / 255)


def test_pgm_with_a_maxval_between_8_and_16_bit_is_scaled_by_its_maxval(tmp_path):
    header = b"P5\n60 60\n4095\n"
    (tmp_path / "twelve.pgm").write_bytes(header + np.full((60, 60), 4095, ">u2").tobytes())
    assert read_image(tmp_path / "twelve.pgm", (60, 60)).max() == 1.0
    (tmp_path / "half.pgm").write_bytes(header + np.full((60, 60), 2048, ">u2").tobytes())
    assert read_image(tmp_path / "half.pgm", (60, 60)).max() == pytest.approx(2048 / 4095, abs=1e-4)


def test_nested_train_test_layout_is_merged(tmp_path, data_config):
    make_dataset(tmp_path / "Train", seed=1)
    make_dataset(tmp_path / "Test", n_per_class=2, seed=2)
    dataset = load_dataset(tmp_path, data_config)
    assert len(dataset.labels) == 12
    assert sorted(set(dataset.partitions)) == ["Test", "Train"]


def test_other_image_size_and_labels_come_from_config(tmp_path):
    make_dataset(tmp_path, size=(32, 48))
    (tmp_path / "0").rename(tmp_path / "benign")
    (tmp_path / "1").rename(tmp_path / "malignant")
    config = DataConfig(image_size=(32, 48), classes={"benign": 0, "malignant": 1})
    dataset = load_dataset(tmp_path, config)
    assert dataset.images.shape == (8, 32, 48)


def test_pattern_none_groups_per_file(tiny_dataset):
    dataset = load_dataset(tiny_dataset, DataConfig(filename_pattern=None))
    assert len(set(dataset.cases)) == 8


# --- bad data: every error names the file or folder --------------------------------

def test_missing_root(tmp_path, data_config):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nowhere", data_config)


def test_single_class_folder_is_reported_missing(tiny_dataset, data_config):
    for f in (tiny_dataset / "1").iterdir():
        f.unlink()
    (tiny_dataset / "1").rmdir()
    with pytest.raises(DataError, match=r"class folder missing: .*tiny/1"):
        load_dataset(tiny_dataset, data_config)


def test_class_folder_missing_in_one_partition(tmp_path, data_config):
    make_dataset(tmp_path / "Train")
    make_dataset(tmp_path / "Test")
    for f in (tmp_path / "Test" / "1").iterdir():
        f.unlink()
    (tmp_path / "Test" / "1").rmdir()
    with pytest.raises(DataError, match=r"class folder missing: .*Test/1"):
        load_dataset(tmp_path, data_config)


def test_third_class_from_config(tiny_dataset, data_config):
    three = data_config.replace(classes={"0": 0, "1": 1, "2": 2})
    with pytest.raises(DataError, match=r"class folder missing: .*tiny/2"):
        load_dataset(tiny_dataset, three)


def test_empty_class_folder(tiny_dataset, data_config):
    for f in (tiny_dataset / "0").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"class folder is empty: .*tiny/0"):
        load_dataset(tiny_dataset, data_config)


def test_no_class_folders(tmp_path, data_config):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="no class folder"):
        load_dataset(tmp_path, data_config)


def test_unreadable_file(tiny_dataset, data_config):
    bad = tiny_dataset / "1" / "0300s1_1_1.pgm_1.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(DataError, match="cannot read image .*0300s1_1_1"):
        load_dataset(tiny_dataset, data_config)


def test_truncated_file(tiny_dataset, data_config):
    path = next((tiny_dataset / "0").iterdir())
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match=f"cannot read image .*{path.name}"):
        load_dataset(tiny_dataset, data_config)


def test_wrong_size(tiny_dataset, data_config):
    write_image(tiny_dataset / "0" / "0999s1_1_1.pgm_1.png", np.zeros((64, 60), np.uint8))
    with pytest.raises(DataError, match="0999s1_1_1.pgm_1.png has size 64x60.*expects 60x60"):
        load_dataset(tiny_dataset, data_config)


def test_color_image_rejected(tmp_path):
    from PIL import Image
    path = tmp_path / "rgb.png"
    Image.new("RGB", (60, 60), (200, 10, 10)).save(path)  # a gray one is read (test_images)
    with pytest.raises(DataError, match="colour image .*mode RGB"):
        read_image(path, (60, 60))


def test_name_not_matching_pattern(tiny_dataset, data_config):
    write_image(tiny_dataset / "0" / "scan_17.png", np.zeros((60, 60), np.uint8))
    (tiny_dataset / "1" / "broken.pgm_1.png").write_bytes(b"not an image")
    # names are checked before any image is decoded: the name error comes first
    with pytest.raises(FileNameError, match="scan_17.png does not match data.filename_pattern"):
        load_dataset(tiny_dataset, data_config)


def test_fingerprint_changes_with_content(tiny_dataset, data_config):
    before = load_dataset(tiny_dataset, data_config).fingerprint()
    write_image(tiny_dataset / "0" / "0500s1_1_1.pgm_1.png", np.ones((60, 60), np.uint8))
    assert load_dataset(tiny_dataset, data_config).fingerprint() != before
