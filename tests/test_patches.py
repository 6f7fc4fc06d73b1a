"""Raw patches from callers: accepted dtypes and layouts, and the errors for the rest."""
from __future__ import annotations

import numpy as np
import pytest

from mammo_core.patches import PatchError, as_unit_patches

SIZE = (60, 60)


def pixels(n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, *SIZE), dtype=np.uint8)


def test_uint8_int64_float_and_channel_axis_give_the_same_patches():
    u8 = pixels()
    expected = u8.astype(np.float32) / 255
    for variant in (u8, u8.astype(np.int64), u8 / 255.0, u8[..., None], (u8 / 255.0)[..., None]):
        out = as_unit_patches(variant, SIZE, bit_depth=8)
        assert out.dtype == np.float32 and out.shape == (3, *SIZE)
        np.testing.assert_allclose(out, expected, atol=1e-6)


def test_uint16_is_scaled_by_its_own_range():
    out = as_unit_patches(np.full((1, *SIZE), 65535, np.uint16), SIZE, bit_depth=8)
    assert out.max() == pytest.approx(1.0)


@pytest.mark.parametrize("array, message", [
    (np.zeros((2, 32, 32), np.uint8), r"expected patches shaped \(N, 60, 60\) or \(N, 60, 60, 1\), got \(2, 32, 32\)"),
    (np.zeros((60, 60), np.uint8), r"got \(60, 60\)"),
    (np.zeros((2, 60, 60, 3), np.uint8), r"got \(2, 60, 60, 3\)"),
    (np.zeros((0, 60, 60), np.uint8), "empty batch"),
    (np.full((1, 60, 60), np.nan), "NaN or infinite"),
    (np.full((1, 60, 60), 255.0), r"float pixels must be intensities in \[0, 1\]"),
    (np.full((1, 60, 60), 300, np.int64), r"integer pixels must lie in \[0, 255\]"),
    (np.full((1, 60, 60), -1, np.int32), r"integer pixels must lie in \[0, 255\]"),
    (np.zeros((1, 60, 60), bool), "got dtype bool"),
    (np.array([["a"] * 60] * 60)[None], "got dtype <U1"),
])
def test_bad_input_names_the_problem(array, message):
    with pytest.raises(PatchError, match=message):
        as_unit_patches(array, SIZE, bit_depth=8)


def test_pairs_of_patches_keep_their_pair_axis():
    pairs = np.stack([pixels(2), pixels(2)[::-1]], axis=1)  # (2, 2, 60, 60)
    out = as_unit_patches(pairs, SIZE, 8, pairs=True)
    assert out.shape == (2, 2, *SIZE) and out.max() <= 1
    assert as_unit_patches(pairs[..., None], SIZE, 8, pairs=True).shape == (2, 2, *SIZE)
    with pytest.raises(PatchError, match=r"\(N, 2, 60, 60\).*baseline, abnormal pairs"):
        as_unit_patches(pixels(2), SIZE, 8, pairs=True)
    with pytest.raises(PatchError, match=r"expected patches shaped \(N, 60, 60\)"):
        as_unit_patches(pairs, SIZE, 8)
