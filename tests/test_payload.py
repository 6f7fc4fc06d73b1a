"""Request bodies -> patch arrays, and the 4xx answer for every kind of bad body."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from serve.payload import BadRequest, patches_from_files, patches_from_json
from serve.settings import ServeSettings

SIZE = (60, 60)
SETTINGS = ServeSettings(max_images_per_request=4)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PATCH = np.arange(3600, dtype=np.uint16).reshape(SIZE).astype(np.uint8)


def body(payload) -> bytes:
    return json.dumps(payload).encode()


def test_base64_images_inputs_and_files_give_the_same_pixels():
    from_images = patches_from_json(body({"images": [b64(png(PATCH))] * 2}), SIZE, SETTINGS, 8)
    from_inputs = patches_from_json(body({"inputs": [PATCH.tolist()] * 2, "bit_depth": 8}),
                                    SIZE, SETTINGS, 16)  # the body's depth, not the model's
    from_files = patches_from_files([("a.png", png(PATCH))] * 2, SIZE, SETTINGS, 8)
    for array in (from_images, from_files, from_inputs):  # intensities, each by its depth
        np.testing.assert_allclose(array, np.stack([PATCH, PATCH]) / 255, atol=1e-7)
    assert from_images.dtype == np.float32


def test_integer_inputs_must_state_their_depth_and_floats_pass_as_sent():
    """An 8-bit client of a model trained with one 16-bit file was read at 1/257."""
    twelve = (PATCH.astype(np.int64) * 16).tolist()  # 12-bit values
    for stated in ({"bit_depth": 12}, {"dtype": "uint16"}):
        units = patches_from_json(body({"inputs": [twelve], **stated}), SIZE, SETTINGS, 16)
        top = 4095 if "bit_depth" in stated else 65535
        np.testing.assert_allclose(units[0], PATCH.astype(np.int64) * 16 / top, atol=1e-6)
    with pytest.raises(BadRequest, match="must say their bit depth") as refused:
        patches_from_json(body({"inputs": [twelve]}), SIZE, SETTINGS, 16)
    assert refused.value.status == 422
    floats = (PATCH / 255).tolist()
    np.testing.assert_allclose(patches_from_json(body({"inputs": [floats]}), SIZE, SETTINGS,
                                                 16)[0], PATCH / 255, atol=1e-7)


def test_resize_setting_resamples_instead_of_refusing():
    big = np.zeros((120, 120), np.uint8)
    with pytest.raises(BadRequest) as refused:
        patches_from_json(body({"images": [b64(png(big))]}), SIZE, SETTINGS, 8)
    assert refused.value.status == 422 and "expects 60x60" in refused.value.message
    resized = patches_from_json(body({"images": [b64(png(big))]}), SIZE,
                                ServeSettings(wrong_size="resize"), 8)
    assert resized.shape == (1, 60, 60) and resized.dtype == np.float32


@pytest.mark.parametrize("raw, status, message", [
    (b"not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, 'one of the keys "images"'),
    (body({"images": [], "inputs": []}), 400, 'one of the keys "images"'),
    (body({"images": ["x"], "extra": 1}), 400, "unknown keys ['extra']"),
    (body({"images": []}), 400, "non-empty list"),
    (body({"images": [1]}), 400, "images[0] must be a base64 string"),
    (body({"images": ["***"]}), 400, "images[0] is not valid base64"),
    (body({"images": [b64(b"hello, not an image")]}), 400, "not a PNG, PGM or DICOM image"),
    (body({"images": [b64(png(PATCH)[:60])]}), 400, "cannot read image images[0]"),
    (body({"images": [b64(png(PATCH))] * 5}), 413, "5 images in one request; the limit is 4"),
    (body({"inputs": [[[0] * 60] * 60, [[0] * 50] * 60]}), 422, "ragged"),
    (body({"inputs": [[["a"] * 60] * 60]}), 422, "must hold numbers only"),
    (body({"inputs": [[[True] * 60] * 60]}), 422, "booleans"),
    (b'{"inputs": [[[NaN]]]}', 422, "NaN or infinity"),
])
def test_bad_bodies_get_a_status_and_a_message(raw, status, message):
    with pytest.raises(BadRequest) as caught:
        patches_from_json(raw, SIZE, SETTINGS, 8)
    assert caught.value.status == status
    assert message in caught.value.message


def test_empty_multipart_and_unknown_settings_are_refused():
    with pytest.raises(BadRequest, match="no files"):
        patches_from_files([], SIZE, SETTINGS, 8)
    with pytest.raises(ValidationError, match="max_batch"):
        ServeSettings(max_batch=3)


def test_an_8_bit_and_a_16_bit_copy_in_one_request_give_the_same_intensities():
    pair = [b64(png(PATCH)), b64(png(PATCH.astype(np.uint16) * 257))]
    for patches in (patches_from_json(body({"images": pair}), SIZE, SETTINGS, 8),
                    patches_from_files([("a.png", png(PATCH)),
                                        ("b.png", png(PATCH.astype(np.uint16) * 257))],
                                       SIZE, SETTINGS, 8)):
        np.testing.assert_allclose(patches[0], patches[1], atol=1e-7)
        assert patches[0].max() == pytest.approx(PATCH.max() / 255)


def test_deep_json_and_forged_headers_are_4xx_not_crashes():
    with pytest.raises(BadRequest, match="nested too deeply") as deep:
        patches_from_json(b"[" * 100_000 + b"]" * 100_000, SIZE, SETTINGS, 8)
    assert deep.value.status == 400
    forged = bytearray(png(np.zeros((60, 60), np.uint8)))
    forged[16:24] = (100_000).to_bytes(4, "big") * 2  # IHDR width, height; CRC now wrong
    with pytest.raises(BadRequest) as caught:
        patches_from_json(body({"images": [b64(bytes(forged))]}), SIZE, SETTINGS, 8)
    assert caught.value.status in (400, 422) and "images[0]" in caught.value.message


def test_pairs_of_base64_images_for_a_siamese_model():
    pair = [b64(png(PATCH)), b64(png(PATCH[::-1]))]
    out = patches_from_json(body({"pairs": [pair, pair]}), SIZE, SETTINGS, 8)
    assert out.shape == (2, 2, *SIZE)
    np.testing.assert_allclose(out[0, 1], PATCH[::-1] / 255, atol=1e-7)


@pytest.mark.parametrize("pairs, message", [
    ([["only-one"]], "pairs\\[0\\] must be a list of two"), (["x"], "pairs\\[0\\] must be a list"),
    ([[b64(png(PATCH)), "@@"]], "images\\[0\\]\\[1\\] is not valid base64")])
def test_malformed_pairs_are_named(pairs, message):
    with pytest.raises(BadRequest, match=message) as err:
        patches_from_json(body({"pairs": pairs}), SIZE, SETTINGS, 8)
    assert 400 <= err.value.status < 500


def test_a_request_over_its_pixel_budget_is_refused_naming_the_limit():
    """Each image is under `max_image_pixels`, together they are over `max_request_pixels`:
    refused (413) from the headers, before the image that passes the budget is decoded."""
    settings = ServeSettings(wrong_size="resize", max_image_pixels=200 * 200,
                             max_request_pixels=3 * 150 * 150)
    images = [b64(png(np.zeros((150, 150), np.uint8)))] * 4
    assert patches_from_json(body({"images": images[:3]}), SIZE, settings, 8).shape == (3, 60, 60)
    with pytest.raises(BadRequest) as refused:
        patches_from_json(body({"images": images}), SIZE, settings, 8)
    assert refused.value.status == 413 and "images[3]" in refused.value.message
    assert "max_request_pixels" in refused.value.message
    with pytest.raises(BadRequest) as one:
        patches_from_json(body({"images": [b64(png(np.zeros((250, 250), np.uint8)))]}), SIZE,
                          settings, 8)
    assert one.value.status == 422 and "per image" in one.value.message
    files = [(f"f{k}.png", png(np.zeros((150, 150), np.uint8))) for k in range(4)]
    with pytest.raises(BadRequest, match="max_request_pixels"):
        patches_from_files(files, SIZE, settings, 8)
