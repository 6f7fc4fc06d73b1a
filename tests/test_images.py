"""Decoding one image: its own bit depth, the allowed formats, headers checked before pixels."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mammo_core.errors import DataError, ImageError
from mammo_core.images import as_unit, decode, decode_image, quantize, to_unit

SIZE = (60, 60)


def encode(array: np.ndarray, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format)
    return buffer.getvalue()


def png_header_only(width: int, height: int, bit_depth: int = 8) -> bytes:
    """A PNG whose IHDR claims `width` x `height` and whose pixel data is garbage."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"garbage")
            + chunk(b"IEND", b""))


PATCH = (np.arange(3600).reshape(SIZE) % 256).astype(np.uint8)


def test_the_same_patch_at_8_and_16_bits_decodes_to_the_same_intensities():
    eight = decode(encode(PATCH), "a", SIZE)
    sixteen = decode(encode(PATCH.astype(np.uint16) * 257), "b", SIZE)
    pgm = decode(encode(PATCH, "PPM"), "c.pgm", SIZE)
    assert (eight.bit_depth, sixteen.bit_depth, pgm.bit_depth) == (8, 16, 8)
    for other in (sixteen, pgm):
        np.testing.assert_allclose(other.pixels, eight.pixels, atol=1e-7)
    assert eight.pixels.dtype == np.float32 and eight.pixels.max() == 1.0


def test_to_unit_and_quantize_are_inverse_at_each_depth():
    for depth, dtype in ((8, np.uint8), (16, np.uint16)):
        stored = np.arange(np.iinfo(dtype).max + 1, dtype=dtype)
        np.testing.assert_array_equal(quantize(to_unit(stored, depth), depth), stored)
    with pytest.raises(ImageError, match=r"must lie in \[0, 255\] \(8-bit\)"):
        to_unit(np.array([256]), 8)


@pytest.mark.parametrize("format", ["BMP", "GIF", "JPEG", "TIFF"])
def test_formats_outside_the_allowed_list_are_refused_by_name(format):
    data = encode(PATCH, format)
    with pytest.raises(ImageError, match="cannot read image x: not a PNG or PGM image"):
        decode(data, "x", SIZE, formats=("PNG", "PPM"))


def test_tiff_is_read_where_allowed():
    assert decode(encode(PATCH, "TIFF"), "x.tif", SIZE).bit_depth == 8


def test_a_wrong_size_is_refused_from_the_header_before_any_pixel_is_decoded():
    # 25 M pixels announced, garbage pixel data: only a header check can answer "size"
    forged = png_header_only(5000, 5000)
    with pytest.raises(ImageError, match="has size 5000x5000.*expects 60x60") as refused:
        decode(forged, "forged.png", SIZE)
    assert refused.value.wrong_size
    with pytest.raises(ImageError, match="25000000 pixels; at most 4194304") as refused:
        decode(forged, "forged.png", SIZE, resize=True, max_pixels=2048 * 2048)
    assert refused.value.wrong_size


def test_a_header_claiming_ten_billion_pixels_is_an_image_error():
    forged = png_header_only(100_000, 100_000)  # Pillow's own bomb check fires on open
    for resize in (False, True):
        with pytest.raises(ImageError, match="bomb.png has too many pixels") as refused:
            decode(forged, "bomb.png", SIZE, resize=resize, max_pixels=10**13)
        assert refused.value.wrong_size


@pytest.mark.parametrize("data, message", [
    (b"", "not a PNG"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "cannot read image"),
    (encode(PATCH)[:-30], "cannot read image"),
    (png_header_only(60, 60), "cannot read image"),
    (b"P5\n60 60\n255\n" + b"\x00" * 100, "cannot read image"),  # truncated PGM
    (b"P5\n60 60\n70000\n", "cannot read image"),  # maxval out of range
    (encode(np.stack([PATCH, PATCH.T, PATCH], axis=2)), "colour image .*mode RGB"),
])
def test_every_decoder_failure_is_an_image_error_naming_the_file(data, message):
    with pytest.raises(ImageError, match=message) as caught:
        decode(data, "x.png", SIZE)
    assert "x.png" in str(caught.value) or message == "not a PNG"
    assert isinstance(caught.value, DataError) and not caught.value.wrong_size


def test_resize_resamples_in_intensity_space():
    big = np.full((120, 90), 65535, np.uint16)
    out = decode_image(encode(big), SIZE, "big", resize=True)
    assert out.shape == SIZE and out.dtype == np.float32 and out.min() == pytest.approx(1.0)


def test_bilevel_images_are_read_as_8_bit():
    buffer = io.BytesIO()
    Image.fromarray(PATCH > 127).save(buffer, format="PNG")
    decoded = decode(buffer.getvalue(), "mask.png", SIZE)
    assert decoded.bit_depth == 8 and set(np.unique(decoded.pixels)) == {0.0, 1.0}


def test_jpeg_and_colour_stored_gray_images_are_read_as_8_bit_gray():
    gray = decode(encode(PATCH, "JPEG"), "a.jpg", SIZE)
    assert gray.bit_depth == 8 and np.abs(gray.pixels - PATCH / 255).max() < 0.1
    rgb = decode(encode(np.repeat(PATCH[..., None], 3, axis=2)), "rgb.png", SIZE)
    np.testing.assert_allclose(rgb.pixels, PATCH / 255, atol=1e-7)  # lossless


def test_a_colour_image_whose_channels_differ_is_refused():
    colour = np.stack([PATCH, PATCH[::-1], PATCH], axis=2)
    with pytest.raises(ImageError, match="colour image .*channels differ"):
        decode(encode(colour), "photo.png", SIZE)


def test_no_size_keeps_the_stored_size_within_the_pixel_bound():
    assert decode(encode(PATCH[:, :40]), "a", None).pixels.shape == (60, 40)
    with pytest.raises(ImageError, match="at most 100 are decoded"):
        decode(encode(PATCH), "a", None, max_pixels=100)


def test_as_unit_scales_integers_by_their_own_range():
    assert as_unit(np.array([[[4095]]], np.int64), bit_depth=12).max() == 1.0
    assert to_unit(np.array([[4095]], np.uint16), 12).max() == 1.0
    assert as_unit(np.array([[[255]]], np.uint8)).max() == 1.0
    assert as_unit(np.array([[[65535]]], np.uint16)).max() == 1.0
    # a 16-bit container: the depth its values need, or the model's if deeper
    assert as_unit(np.array([[[255]]], np.uint16)).max() == 1.0
    assert as_unit(np.array([[[255]]], np.uint16), bit_depth=16).max() == pytest.approx(255 / 65535)
    assert as_unit(np.array([[[0.5]]], np.float64)).dtype == np.float32


@pytest.mark.parametrize("bad, depth, message", [
    (np.array([[[np.nan]]]), None, "NaN"), (np.array([[[2.0]]]), None, r"\[0, 1\]"),
    (np.array([[[1]]], np.int64), None, "8- or 16-bit"),
    (np.array([[[256]]], np.int64), 8, r"\[0, 255\] \(8-bit\)")])
def test_as_unit_rejects(bad, depth, message):
    with pytest.raises(ImageError, match=message):
        as_unit(bad, bit_depth=depth)


def twelve_bit_patch() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(200, 3800, size=(60, 60)).astype(np.uint16)


def pgm(array: np.ndarray, maxval: int) -> bytes:
    """A binary PGM with the given maxval (16-bit samples, big-endian, as the format says)."""
    return f"P5\n{array.shape[1]} {array.shape[0]}\n{maxval}\n".encode() + \
        array.astype(">u2").tobytes()


def container(array: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt)
    return out.getvalue()


def test_12_bit_content_reads_the_same_from_png_tiff_and_pgm():
    """Before, a 16-bit PNG or TIFF of 12-bit content was divided by 65535 (<= 0.0625)
    while the same pixels as a PGM with maxval 4095 came out at full scale."""
    patch = twelve_bit_patch()
    decoded = {name: decode(data, name, (60, 60)) for name, data in {
        "png": container(patch, "PNG"), "tiff": container(patch, "TIFF"),
        "pgm": pgm(patch, 4095)}.items()}
    for name, image in decoded.items():
        np.testing.assert_allclose(image.pixels, patch / 4095, atol=2e-4, err_msg=name)
    assert decoded["png"].bit_depth == decoded["tiff"].bit_depth == 12


def test_a_16_bit_container_reads_at_the_depth_its_values_need_or_the_models():
    for largest, depth in ((255, 8), (1000, 10), (4095, 12), (9000, 14), (40000, 16)):
        array = np.full((4, 4), largest, np.uint16)
        image = decode(container(array, "PNG"), "x", None)
        assert (image.bit_depth, image.container_depth) == (depth, 16)
        assert image.pixels.max() == pytest.approx(largest / (2 ** depth - 1))
    dark = np.full((4, 4), 900, np.uint16)  # a dark patch of a 12-bit model's data
    assert decode(container(dark, "PNG"), "x", None, depth=12).pixels.max() == \
        pytest.approx(900 / 4095)


def test_a_collection_of_16_bit_files_is_read_at_one_depth(tmp_path):
    """A dark 12-bit patch beside brighter ones is not brightened by its own depth."""
    from mammo_core.config import DataConfig
    from mammo_core.data import load_dataset

    bright = twelve_bit_patch()
    dark = (bright // 8).astype(np.uint16)  # values < 512: a 10-bit patch on its own
    for label, array in (("0", bright), ("1", dark)):
        (tmp_path / label).mkdir()
        Image.fromarray(array).save(tmp_path / label / f"{label}.png")
    dataset = load_dataset(tmp_path, DataConfig(filename_pattern=None))
    assert dataset.bit_depths.tolist() == [12, 12]
    np.testing.assert_allclose(dataset.images[1], dark / 4095, atol=1e-6)
