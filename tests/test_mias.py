"""The mini-MIAS reader: Info.txt's awkward lines, bottom-left coordinates, women as groups."""
from __future__ import annotations

import numpy as np
import pytest
from collection_fixtures import MIAS_SIZE, write_mias
from PIL import Image

from mammo_core.config import DataConfig
from mammo_core.data import load_dataset
from mammo_core.errors import DataError
from mammo_core.readers.mias import load_mias, parse_info, woman


@pytest.fixture(scope="module")
def mias(tmp_path_factory):
    return write_mias(tmp_path_factory.mktemp("mias"), women=8)


def whole(**overrides) -> DataConfig:
    return DataConfig(**({"layout": "mias", "image_size": (128, 128)} | overrides))


def test_info_lines_headers_missing_coordinates_and_repeats(mias):
    records = parse_info(mias / "Info.txt")  # CRLF, a header line, a blank line
    by_ref = {}
    for record in records:
        by_ref.setdefault(record.reference, []).append(record)
    assert len(by_ref["mdb005"]) == 2  # one image, two abnormalities
    assert by_ref["mdb002"][0].abnormality == "NORM" and by_ref["mdb002"][0].xy is None
    assert by_ref["mdb009"][0].severity == "B" and by_ref["mdb009"][0].xy is None
    assert by_ref["mdb001"][0].xy == (300, 600) and by_ref["mdb001"][0].radius == 60
    assert by_ref["mdb001"][0].centre(1024) == (1023 - 600, 300)  # origin bottom-left


def test_whole_mammograms_downscaled_with_one_label_per_image(mias):
    dataset = load_dataset(mias, whole())
    assert dataset.images.shape[1:] == (128, 128) and dataset.bit_depth == 8
    names = [p.rsplit("/", 1)[-1] for p in dataset.paths]
    assert len(names) == len(set(names)) == 16  # mdb005's two lines are one image
    label = dict(zip(names, dataset.labels.tolist()))
    assert label["mdb005.pgm"] == 1 and label["mdb002.pgm"] == 0 and label["mdb009.pgm"] == 1


def test_left_and_right_breast_of_one_woman_are_one_group(mias):
    dataset = load_dataset(mias, whole())
    case = dict(zip([p.rsplit("/", 1)[-1] for p in dataset.paths], dataset.cases))
    assert case["mdb001.pgm"] == case["mdb002.pgm"] == woman("mdb002") == "woman001"
    assert case["mdb003.pgm"] == case["mdb004.pgm"] != case["mdb005.pgm"]


def test_roi_patches_are_centred_on_the_flipped_coordinates(tmp_path):
    root = tmp_path / "mias"
    root.mkdir()
    pixels = np.full(MIAS_SIZE, 90, dtype=np.uint8)
    pixels[1023 - 300 - 3:1023 - 300 + 4, 700 - 3:700 + 4] = 255  # x=700, y=300 bottom-left
    Image.fromarray(pixels).save(root / "mdb001.pgm")
    Image.fromarray(np.full(MIAS_SIZE, 90, dtype=np.uint8)).save(root / "mdb002.pgm")
    (root / "Info.txt").write_text("mdb001 G CALC M 700 300 8\nmdb002 G NORM\n")
    config = whole(mias_task="roi", image_size=(32, 32), roi_patch_size=32,
                   normal_patches_per_image=3)
    dataset = load_mias(root, config)
    assert dataset.labels.tolist() == [1, 0, 0, 0]
    spot = dataset.images[0]
    assert spot[13:19, 13:19].min() > 0.99 and spot[:8].max() < 0.36  # bright centre only
    assert dataset.paths[0].endswith("mdb001.pgm#723,700")
    assert len(set(dataset.paths[1:])) == 3  # three distinct tissue places


def breast_on_film(root, info: str) -> None:
    """Writes mdb001 (left breast: a bright half-disc on dark film), mdb002 (normal) and
    Info.txt holding `info`."""
    rows, cols = np.ogrid[:MIAS_SIZE[0], :MIAS_SIZE[1]]
    breast = ((rows - 512) ** 2 + cols ** 2) < 500 ** 2
    pixels = np.where(breast, 120, 5).astype(np.uint8)
    root.mkdir()
    for ref in ("mdb001", "mdb002"):
        Image.fromarray(pixels).save(root / f"{ref}.pgm")
    (root / "Info.txt").write_text(info)


def test_roi_windows_of_every_class_are_centred_on_tissue(tmp_path):
    """One rule for both classes: before, normal windows had to pass a tissue test and
    abnormal ones were cut wherever their centre was, so the film in a window told the
    class apart. A record centred on the film is left out, and says so."""
    root = tmp_path / "mias"
    breast_on_film(root, "mdb001 G CALC M 200 500 8\nmdb001 G CIRC B 900 500 20\n"
                         "mdb002 G NORM\n")
    config = whole(mias_task="roi", image_size=(32, 32), roi_patch_size=128,
                   normal_patches_per_image=6)
    with pytest.warns(UserWarning, match=r"1 abnormal record\(s\) centred off the breast.*"
                                         r"mdb001 \(line 2\)"):
        dataset = load_mias(root, config)
    assert dataset.labels.tolist() == [1] + [0] * 6
    for path in dataset.paths:  # every centre on the breast (the half-disc at column 0)
        row, col = map(int, path.rsplit("#", 1)[1].split(","))
        assert (row - 512) ** 2 + col ** 2 < 500 ** 2, path


def test_an_abnormality_centred_outside_its_image_names_the_record(tmp_path):
    root = tmp_path / "mias"
    breast_on_film(root, "mdb001 G CALC M 200 500 8\nmdb001 G CALC M 1500 500 8\n")
    with pytest.raises(DataError, match=r"line 2: mdb001's centre \(x 1500, y 500\) lies "
                                        r"outside its 1024x1024 image"):
        load_mias(root, whole(mias_task="roi", image_size=(32, 32)))


def test_roi_skips_abnormalities_without_coordinates(mias):
    dataset = load_dataset(mias, whole(mias_task="roi", image_size=(48, 48)))
    assert not any(p.split("/")[-1].startswith("mdb009.pgm") for p in dataset.paths)
    assert sum(p.split("/")[-1].startswith("mdb005.pgm") for p in dataset.paths) == 2


def test_label_map_picks_the_classes_of_a_task(mias):
    dataset = load_dataset(mias, whole(label_map={"NORM": 0, "CALC": 1}))
    names = {p.rsplit("/", 1)[-1] for p in dataset.paths}
    assert "mdb001.pgm" not in names  # CIRC is not part of this task
    assert "mdb004.pgm" in names and "mdb002.pgm" in names


@pytest.mark.parametrize("damage, message", [
    ("no_info", "missing MIAS description"), ("bad_line", "line 3: expected"),
    ("no_records", "no MIAS record"), ("missing_image", "missing image .*mdb003.pgm"),
    ("corrupt_image", "cannot read image .*mdb001.pgm")])
def test_a_broken_collection_names_the_file(tmp_path, damage, message):
    root = write_mias(tmp_path / "mias", women=6)
    info = root / "Info.txt"
    if damage == "no_info":
        info.unlink()
    elif damage == "bad_line":
        lines = info.read_text().splitlines()
        lines[2] = "mdb001 Q CIRC B 1 2 3"
        info.write_text("\n".join(lines))
    elif damage == "no_records":
        info.write_text("reference tissue class\n\n")
    elif damage == "missing_image":
        (root / "mdb003.pgm").unlink()
    else:
        (root / "mdb001.pgm").write_bytes(b"P5\n1024 1024\n255\n" + b"\x00" * 100)
    with pytest.raises(DataError, match=message):
        load_dataset(root, whole())
