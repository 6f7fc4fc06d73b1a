"""Turning HTTP request bodies into patch arrays, or into a 4xx error that says why.

Three shapes are accepted: JSON `{"images": [base64 PNG/PGM, ...]}`, MLflow-style JSON
`{"inputs": nested array (N, rows, cols)}`, and multipart uploads of image files.
"""
from __future__ import annotations

import base64
import binascii
import json

import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request

from mammo_core.data import DataError, decode_image
from serve.settings import ServeSettings

JSON_KEYS = ("images", "inputs")


class BadRequest(Exception):
    """A request the service refuses: HTTP `status` and a message for the caller."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def check_size(n_bytes: int, settings: ServeSettings) -> None:
    if n_bytes > settings.max_body_bytes:
        raise BadRequest(413, f"request body of {n_bytes} bytes exceeds the limit of "
                              f"{settings.max_body_bytes} bytes")


def patches_from_json(body: bytes, size: tuple[int, int], settings: ServeSettings) -> np.ndarray:
    """Returns the patches of a JSON body: uint8/uint16 for images, numbers for inputs."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadRequest(400, f"body is not valid JSON: {err}") from err
    if not isinstance(data, dict) or len(set(data) & set(JSON_KEYS)) != 1:
        raise BadRequest(400, 'expected a JSON object with one of the keys "images" (base64 '
                              'PNG/PGM strings) or "inputs" (nested array N x rows x cols)')
    unknown = sorted(set(data) - set(JSON_KEYS))
    if unknown:
        raise BadRequest(400, f"unknown keys {unknown}; allowed: {list(JSON_KEYS)}")
    key = next(k for k in JSON_KEYS if k in data)
    items = data[key]
    if not isinstance(items, list) or not items:
        raise BadRequest(400, f'"{key}" must be a non-empty list')
    check_count(len(items), settings)
    if key == "images":
        return np.stack([decode_base64(item, i, size, settings) for i, item in enumerate(items)])
    return numeric_array(items)


def patches_from_files(files: list[tuple[str, bytes]], size: tuple[int, int],
                       settings: ServeSettings) -> np.ndarray:
    """Returns the patches of uploaded image files."""
    if not files:
        raise BadRequest(400, "the multipart request holds no files")
    check_count(len(files), settings)
    return np.stack([decode(data, name, size, settings) for name, data in files])


def check_count(n: int, settings: ServeSettings) -> None:
    if n > settings.max_images_per_request:
        raise BadRequest(413, f"{n} images in one request; the limit is "
                              f"{settings.max_images_per_request}")


def decode_base64(item, index: int, size: tuple[int, int], settings: ServeSettings) -> np.ndarray:
    if not isinstance(item, str):
        raise BadRequest(400, f"images[{index}] must be a base64 string, got {type(item).__name__}")
    try:
        data = base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError) as err:
        raise BadRequest(400, f"images[{index}] is not valid base64: {err}") from err
    return decode(data, f"images[{index}]", size, settings)


def decode(data: bytes, name: str, size: tuple[int, int], settings: ServeSettings) -> np.ndarray:
    try:
        return decode_image(data, size, name, resize=settings.wrong_size == "resize")
    except DataError as err:
        status = 422 if "expects" in str(err) else 400  # wrong size vs undecodable bytes
        raise BadRequest(status, str(err)) from err


def numeric_array(items: list) -> np.ndarray:
    """Returns nested JSON lists as a numeric array; refuses ragged, non-numeric or non-finite data."""
    try:
        array = np.asarray(items)
    except ValueError as err:
        raise BadRequest(422, f'"inputs" is ragged: every patch must have the same size ({err})') from err
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number)
                                     or array.dtype == bool):
        raise BadRequest(422, f'"inputs" must hold numbers only, got {array.dtype} values')
    if array.dtype == bool:
        raise BadRequest(422, '"inputs" must hold numbers, got booleans')
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise BadRequest(422, '"inputs" contains NaN or infinity')
    return array


async def read_patches(request: Request, settings: ServeSettings, size: list[int]) -> np.ndarray:
    """Returns the request's patches; raises BadRequest (4xx) naming what is wrong."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit():
        check_size(int(declared), settings)
    size = tuple(size)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=settings.max_images_per_request + 1)
        files = [(item.filename or key, await item.read()) for key, item in form.multi_items()
                 if isinstance(item, UploadFile)]
        check_size(sum(len(data) for _, data in files), settings)
        return patches_from_files(files, size, settings)
    body = await request.body()
    check_size(len(body), settings)
    return patches_from_json(body, size, settings)
