"""Turning HTTP request bodies into patch arrays, or into a 4xx error that says why.

Four shapes are accepted: JSON `{"images": [base64 PNG/PGM/DICOM, ...]}`, MLflow-style JSON
`{"inputs": nested array (N, rows, cols)}`, multipart uploads of image files, and one
DICOM file as the body (`Content-Type: application/dicom`); a model
of pairs (siamese) takes `{"pairs": [[baseline base64, abnormal base64], ...]}` or inputs
shaped (N, 2, rows, cols).
Everything comes back as [0, 1] intensities: images each scaled by its own bit depth (a
16-bit one at least by the model's training depth), integer `inputs` by the bit depth the
body states (`"bit_depth"` or `"dtype"`: refused without), float `inputs` as sent. The
body is bounded while it is read (chunked or not), and parsing and decoding run in a
worker thread, off the replica's event loop.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json

import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request

from mammo_core.errors import ImageError
from mammo_core.images import decode_image, header_pixels, to_unit
from serve.settings import ServeSettings

JSON_KEYS = ("images", "inputs", "pairs")
DEPTH_KEYS = ("bit_depth", "dtype")  # how integer "inputs" say what their full scale is
DTYPE_DEPTHS = {"uint8": 8, "uint16": 16}


class BadRequest(Exception):
    """A request the service refuses: HTTP `status` and a message for the caller."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class PixelBudget:
    """The pixels one request's images may hold in all (`max_request_pixels`), taken from
    each image's header before it is decoded."""

    def __init__(self, settings: ServeSettings):
        self.settings, self.total = settings, 0

    def take(self, data: bytes, name: str) -> None:
        """Counts the image's pixels; raises BadRequest (413) once the request is over."""
        self.total += header_pixels(data, self.settings.image_formats)
        if self.total > self.settings.max_request_pixels:
            raise BadRequest(413, f"the request's images hold over {self.total} pixels by "
                                  f"{name}; the limit is {self.settings.max_request_pixels} "
                                  "pixels a request (max_request_pixels)")


def check_size(n_bytes: int, settings: ServeSettings, so_far: bool = False) -> None:
    if n_bytes > settings.max_body_bytes:
        raise BadRequest(413, f"request body of {'over ' if so_far else ''}{n_bytes} bytes "
                              f"exceeds the limit of {settings.max_body_bytes} bytes "
                              "(max_body_bytes)")


def json_body(body: bytes):
    """Returns the parsed JSON body; raises BadRequest (400) saying why it is not JSON."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadRequest(400, f"body is not valid JSON: {err}") from err
    except RecursionError as err:
        raise BadRequest(400, "body is not valid JSON: nested too deeply") from err


def patches_from_json(body: bytes, size: tuple[int, int], settings: ServeSettings,
                      depth: int | None) -> np.ndarray:
    """Returns the patches of a JSON body as [0, 1] intensities (images: each by its own
    depth, 16-bit ones at least by the model's `depth`; inputs: floats as sent, integers by
    the bit depth the body states)."""
    data = json_body(body)
    if not isinstance(data, dict) or len(set(data) & set(JSON_KEYS)) != 1:
        raise BadRequest(400, 'expected a JSON object with one of the keys "images" (base64 '
                              'PNG/PGM strings), "inputs" (nested array N x rows x cols) or '
                              '"pairs" ([baseline, abnormal] base64 pairs, siamese models)')
    unknown = sorted(set(data) - set(JSON_KEYS) - set(DEPTH_KEYS))
    if unknown:
        raise BadRequest(400, f"unknown keys {unknown}; allowed: {list(JSON_KEYS)}, and with "
                              f"\"inputs\" one of {list(DEPTH_KEYS)}")
    key = next(k for k in JSON_KEYS if k in data)
    items = data[key]
    if not isinstance(items, list) or not items:
        raise BadRequest(400, f'"{key}" must be a non-empty list')
    check_count(len(items), settings)
    budget = PixelBudget(settings)
    if key == "images":
        return np.stack([decode_base64(item, i, size, settings, depth, budget)
                         for i, item in enumerate(items)])
    if key == "pairs":
        return np.stack([decode_pair(item, i, size, settings, depth, budget)
                         for i, item in enumerate(items)])
    return inputs_as_units(numeric_array(items), data)


def decode_pair(item, index: int, size: tuple[int, int], settings: ServeSettings,
                depth: int | None, budget: PixelBudget) -> np.ndarray:
    """Returns one [baseline, abnormal] pair of base64 images as a (2, rows, cols) array."""
    if not isinstance(item, list) or len(item) != 2:
        raise BadRequest(400, f"pairs[{index}] must be a list of two base64 images "
                              "[baseline, abnormal]")
    return np.stack([decode_base64(image, f"{index}][{k}", size, settings, depth, budget)
                     for k, image in enumerate(item)])


def patches_from_files(files: list[tuple[str, bytes]], size: tuple[int, int],
                       settings: ServeSettings, depth: int | None) -> np.ndarray:
    """Returns the patches of uploaded image files."""
    if not files:
        raise BadRequest(400, "the multipart request holds no files")
    check_count(len(files), settings)
    budget = PixelBudget(settings)
    return np.stack([decode(data, name, size, settings, depth, budget) for name, data in files])


def check_count(n: int, settings: ServeSettings) -> None:
    if n > settings.max_images_per_request:
        raise BadRequest(413, f"{n} images in one request; the limit is "
                              f"{settings.max_images_per_request} (max_images_per_request)")


def decode_base64(item, index: int, size: tuple[int, int], settings: ServeSettings,
                  depth: int | None, budget: PixelBudget) -> np.ndarray:
    if not isinstance(item, str):
        raise BadRequest(400, f"images[{index}] must be a base64 string, got {type(item).__name__}")
    try:
        data = base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError) as err:
        raise BadRequest(400, f"images[{index}] is not valid base64: {err}") from err
    return decode(data, f"images[{index}]", size, settings, depth, budget)


def decode(data: bytes, name: str, size: tuple[int, int], settings: ServeSettings,
           depth: int | None, budget: PixelBudget) -> np.ndarray:
    budget.take(data, name)
    try:
        return decode_image(data, size, name, resize=settings.wrong_size == "resize",
                            formats=settings.image_formats,
                            max_pixels=settings.max_image_pixels, depth=depth)
    except ImageError as err:
        raise BadRequest(422 if err.wrong_size else 400, str(err)) from err


def inputs_as_units(array: np.ndarray, data: dict) -> np.ndarray:
    """Returns "inputs" as [0, 1] float32: floats as sent; integers divided by the full
    scale of the bit depth the body states ("bit_depth": 8..16, or "dtype": "uint8" /
    "uint16"), since a model's own training depth says nothing about the client's data."""
    stated = {k: data[k] for k in DEPTH_KEYS if k in data}
    if len(stated) > 1:
        raise BadRequest(422, f'state the pixels\' depth once: "bit_depth" or "dtype", '
                              f'got {stated}')
    if not np.issubdtype(array.dtype, np.integer):
        return array
    if not stated:
        raise BadRequest(422, 'integer "inputs" must say their bit depth: add "bit_depth" (8, '
                              '10, 12, 14 or 16) or "dtype" ("uint8" or "uint16"), or send '
                              'floats in [0, 1]')
    depth = stated.get("bit_depth", DTYPE_DEPTHS.get(stated.get("dtype")))
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= 16:
        raise BadRequest(422, f'"bit_depth" must be an integer 1..16 or "dtype" one of '
                              f'{list(DTYPE_DEPTHS)}, got {stated}')
    try:
        return to_unit(array, depth)
    except ImageError as err:
        raise BadRequest(422, f'"inputs": {err}') from err


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


async def read_patches(request: Request, settings: ServeSettings, size: list[int],
                       depth: int | None = None) -> np.ndarray:
    """Returns the request's patches; raises BadRequest (4xx) naming what is wrong.

    The body is read within `max_body_bytes` (413 as soon as it is exceeded); JSON parsing
    and image decoding run in a worker thread.
    """
    body = await read_body(request, settings)
    size = tuple(size)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/dicom"):
        return await asyncio.to_thread(guarded, patches_from_files, [("application/dicom body",
                                                                       body)], size, settings,
                                       depth)
    if content_type.startswith("multipart/form-data"):
        files = await form_files(request, body, settings)
        return await asyncio.to_thread(guarded, patches_from_files, files, size, settings, depth)
    return await asyncio.to_thread(guarded, patches_from_json, body, size, settings, depth)


async def read_body(request: Request, settings: ServeSettings) -> bytes:
    """Returns the body, refusing (413) a declared or actual length over the limit."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit():
        check_size(int(declared), settings)
    chunks, total = [], 0
    async for chunk in request.stream():  # chunked bodies declare no length
        total += len(chunk)
        check_size(total, settings, so_far=True)
        chunks.append(chunk)
    return b"".join(chunks)


async def form_files(request: Request, body: bytes, settings: ServeSettings) -> list[tuple[str, bytes]]:
    """Returns (file name, bytes) of each file in a multipart body already read in full."""
    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(
            max_files=settings.max_images_per_request + 1, max_fields=16)
        return [(item.filename or key, await item.read()) for key, item in form.multi_items()
                if isinstance(item, UploadFile)]
    except BadRequest:
        raise
    except Exception as err:  # noqa: BLE001 — any parser failure is the body's fault
        raise BadRequest(400, f"malformed multipart body: {getattr(err, 'detail', err)}") from err


def guarded(parse, *args):
    """Runs a body parser; an unexpected parser failure is still the body's fault (400)."""
    try:
        return parse(*args)
    except BadRequest:
        raise
    except (ValueError, TypeError, RecursionError, OverflowError, MemoryError) as err:
        raise BadRequest(400, f"malformed request body: {type(err).__name__}: {err}") from err
