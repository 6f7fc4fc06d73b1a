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
    from_images = patches_from_json(body({"images": [b64(png(PATCH))] * 2}), SIZE, SETTINGS)
    from_inputs = patches_from_json(body({"inputs": [PATCH.tolist()] * 2}), SIZE, SETTINGS)
    from_files = patches_from_files([("a.png", png(PATCH))] * 2, SIZE, SETTINGS)
    for array in (from_images, from_inputs, from_files):
        np.testing.assert_array_equal(array, np.stack([PATCH, PATCH]))
    assert from_images.dtype == np.uint8


def test_resize_setting_resamples_instead_of_refusing():
    big = np.zeros((120, 120), np.uint8)
    with pytest.raises(BadRequest) as refused:
        patches_from_json(body({"images": [b64(png(big))]}), SIZE, SETTINGS)
    assert refused.value.status == 422 and "expects 60x60" in refused.value.message
    resized = patches_from_json(body({"images": [b64(png(big))]}), SIZE,
                                ServeSettings(wrong_size="resize"))
    assert resized.shape == (1, 60, 60) and resized.dtype == np.uint8


@pytest.mark.parametrize("raw, status, message", [
    (b"not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, 'one of the keys "images"'),
    (body({"images": [], "inputs": []}), 400, 'one of the keys "images"'),
    (body({"images": ["x"], "extra": 1}), 400, "unknown keys ['extra']"),
    (body({"images": []}), 400, "non-empty list"),
    (body({"images": [1]}), 400, "images[0] must be a base64 string"),
    (body({"images": ["***"]}), 400, "images[0] is not valid base64"),
    (body({"images": [b64(b"hello, not an image")]}), 400, "not a PNG, PGM or TIFF image"),
    (body({"images": [b64(png(PATCH)[:60])]}), 400, "cannot read image images[0]"),
    (body({"images": [b64(png(PATCH))] * 5}), 413, "5 images in one request; the limit is 4"),
    (body({"inputs": [[[0] * 60] * 60, [[0] * 50] * 60]}), 422, "ragged"),
    (body({"inputs": [[["a"] * 60] * 60]}), 422, "must hold numbers only"),
    (body({"inputs": [[[True] * 60] * 60]}), 422, "booleans"),
    (b'{"inputs": [[[NaN]]]}', 422, "NaN or infinity"),
])
def test_bad_bodies_get_a_status_and_a_message(raw, status, message):
    with pytest.raises(BadRequest) as caught:
        patches_from_json(raw, SIZE, SETTINGS)
    assert caught.value.status == status
    assert message in caught.value.message


def test_empty_multipart_and_unknown_settings_are_refused():
    with pytest.raises(BadRequest, match="no files"):
        patches_from_files([], SIZE, SETTINGS)
    with pytest.raises(ValidationError, match="max_batch"):
        ServeSettings(max_batch=3)
