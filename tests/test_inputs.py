"""Every form MLflow's scoring protocol hands a pyfunc becomes the same raw patch array."""
import base64
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mammo_core.images import decode_image
from mammo_core.inputs import raw_patches
from mammo_core.patches import PatchError

SIZE = (6, 5)
RNG = np.random.default_rng(0)
PATCHES = RNG.integers(0, 256, (3, *SIZE)).astype(np.uint8)


def decode(data: bytes, name: str) -> np.ndarray:
    return decode_image(data, SIZE, name)


def b64png(image: np.ndarray) -> str:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def test_an_array_passes_through_as_sent():
    got = raw_patches(PATCHES.astype(np.int64), SIZE, decode)
    assert got.dtype == np.int64 and np.array_equal(got, PATCHES)


def test_pixel_columns_are_read_row_major_and_integers_stay_integers():
    frame = pd.DataFrame(PATCHES.reshape(3, -1).astype(np.int64))
    got = raw_patches(frame, SIZE, decode)
    assert got.dtype.kind == "i" and np.array_equal(got, PATCHES)
    csv = pd.read_csv(io.StringIO(frame.to_csv(index=False)))  # what text/csv gives
    assert np.array_equal(raw_patches(csv, SIZE, decode), PATCHES)


def test_a_column_of_base64_images_is_decoded_to_unit_intensities():
    frame = pd.DataFrame({"image": [b64png(p) for p in PATCHES]})
    np.testing.assert_allclose(raw_patches(frame, SIZE, decode), PATCHES / 255, atol=1e-7)
    strings = np.array([b64png(p) for p in PATCHES])  # {"inputs": ["...", ...]}
    np.testing.assert_allclose(raw_patches(strings, SIZE, decode), PATCHES / 255, atol=1e-7)


def test_cells_of_nested_pixels_and_named_arrays():
    frame = pd.DataFrame({"pixels": [p.tolist() for p in PATCHES]})  # dataframe_records
    assert np.array_equal(raw_patches(frame, SIZE, decode), PATCHES)
    assert np.array_equal(raw_patches({"image": PATCHES}, SIZE, decode), PATCHES)


def test_pairs_from_two_named_columns_in_either_order_or_one_column_of_pairs():
    pairs = np.stack([PATCHES, PATCHES[::-1]], axis=1)  # (3, 2, rows, cols)
    frame = pd.DataFrame({"abnormal": [b64png(p) for p in pairs[:, 1]],
                          "baseline": [b64png(p) for p in pairs[:, 0]]})
    np.testing.assert_allclose(raw_patches(frame, (2, *SIZE), decode), pairs / 255, atol=1e-7)
    nested = pd.DataFrame({"pair": [p.tolist() for p in pairs]})
    assert np.array_equal(raw_patches(nested, (2, *SIZE), decode), pairs)
    flat = pd.DataFrame(pairs.reshape(3, -1))
    assert np.array_equal(raw_patches(flat, (2, *SIZE), decode), pairs)


@pytest.mark.parametrize("table, message", [
    (pd.DataFrame(np.zeros((2, 29))), "needs 30 columns"),
    (pd.DataFrame(columns=["image"]), "empty table"),
    (pd.DataFrame({"a": ["x"], "b": ["y"]}), "one column of images"),
    (pd.DataFrame({"image": ["not base64!"]}), "row 0, column 'image' is not valid base64"),
    (pd.DataFrame({"image": [base64.b64encode(b"GIF89a....").decode()]}), "cannot read image"),
    (pd.DataFrame({"image": [[[1, 2], [3, 4]]]}), "must be a base64 image or 6 x 5 numbers"),
    (pd.DataFrame({"image": [["a"] * 5] * 1}), "must be a base64 image"),
    ({"a": PATCHES, "b": PATCHES[:2]}, "different numbers of images"),
    ({"a": 3}, "one value per image"),
])
def test_a_table_that_is_not_patches_is_refused_naming_the_problem(table, message):
    with pytest.raises(PatchError, match=message):
        raw_patches(table, SIZE, decode)


def test_a_wrongly_sized_image_in_a_table_names_its_row():
    frame = pd.DataFrame({"image": [b64png(PATCHES[0]), b64png(np.zeros((7, 7), np.uint8))]})
    with pytest.raises(PatchError, match="row 1"):
        raw_patches(frame, SIZE, decode)
