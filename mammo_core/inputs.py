"""A model's input in every form MLflow's scoring protocol hands over, as one raw array.

`mlflow models serve` (and Serve's `/invocations`, which parses bodies the same way) gives
the pyfunc what the request held: a numeric array (`inputs`, `instances`), an array of
strings or a dict of arrays (`inputs`/`instances` of named values), or a table
(`dataframe_split`, `dataframe_records`, CSV, Parquet) with one row per image. A table row
is one of:

- **pixel columns**: rows x cols numbers (2 x rows x cols for pairs), row-major, as
  `pd.DataFrame(patches.reshape(len(patches), -1))` writes them;
- **image columns**: one column of base64 PNG/PGM strings (or raw bytes); pairs take two
  (`baseline`, `abnormal`, or the first two in order);
- **array cells**: one column whose cells are nested lists of one image (or one pair).

Integers come back as sent (the caller scales them at the model's training depth, as for
any integer array); decoded images come back as [0, 1] floats, each by its own depth.
Anything else raises PatchError naming what was expected.
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

import numpy as np
import pandas as pd

from mammo_core.errors import ImageError
from mammo_core.patches import PatchError

Decoder = Callable[[bytes, str], np.ndarray]  # (encoded image, name for errors) -> [0, 1]
PAIR_COLUMNS = ("baseline", "abnormal")


def raw_patches(model_input, shape: tuple[int, ...], decode: Decoder) -> np.ndarray:
    """Returns `model_input` as one array (N, *shape); `shape` is (rows, cols), or
    (2, rows, cols) for a model of pairs. Raises PatchError naming the problem."""
    if isinstance(model_input, pd.DataFrame):
        return from_table(model_input, shape, decode)
    if isinstance(model_input, dict):
        return from_table(pd.DataFrame(dict_columns(model_input)), shape, decode)
    try:
        array = np.asarray(model_input)
    except ValueError as err:  # ragged nested lists
        raise PatchError(f"patches must all have the same size: {err}") from err
    if array.dtype.kind in "USO" and array.ndim in (1, 2):
        return from_table(pd.DataFrame(array.reshape(len(array), -1)), shape, decode)
    return array


def dict_columns(named: dict) -> dict[str, list]:
    """Returns {name: one value per image} of a dict of arrays (MLflow's named inputs)."""
    columns = {}
    for name, values in named.items():
        values = np.asarray(values) if not isinstance(values, list) else values
        if np.ndim(values) == 0:
            raise PatchError(f'input "{name}" must hold one value per image, got a scalar')
        columns[str(name)] = list(values)
    if len({len(v) for v in columns.values()}) > 1:
        raise PatchError(f"named inputs hold different numbers of images: "
                         f"{ {k: len(v) for k, v in columns.items()} }")
    return columns


def from_table(frame: pd.DataFrame, shape: tuple[int, ...], decode: Decoder) -> np.ndarray:
    """Returns a table of one image (or pair) per row as (N, *shape)."""
    if frame.empty:
        raise PatchError("expected at least one image, got an empty table")
    n_pixels = int(np.prod(shape))
    if all(pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t)
           for t in frame.dtypes):
        if frame.shape[1] != n_pixels:
            raise PatchError(f"a table of pixel columns needs {n_pixels} columns per row "
                             f"({' x '.join(map(str, shape))}, row-major), got {frame.shape[1]}")
        return frame.to_numpy().reshape(len(frame), *shape)
    columns = image_columns(frame, pairs=len(shape) == 3)
    per_cell = shape if len(columns) == 1 else shape[-2:]
    rows = [[cell(frame[c].iloc[i], f"row {i}, column {c!r}", per_cell, decode)
             for c in columns] for i in range(len(frame))]
    return np.stack([r[0] if len(r) == 1 else np.stack(r) for r in rows])


def image_columns(frame: pd.DataFrame, pairs: bool) -> list:
    """Returns the columns that hold images: one, or for pairs the (baseline, abnormal)
    columns (by name, else the two in order) or one column of nested (2, rows, cols) cells."""
    names = list(map(str, frame.columns))
    if pairs and set(PAIR_COLUMNS) <= set(names):
        return [frame.columns[names.index(n)] for n in PAIR_COLUMNS]
    if frame.shape[1] == 1 or (pairs and frame.shape[1] == 2):
        return list(frame.columns)
    what = ("two columns of images (baseline, abnormal) or one of nested pairs" if pairs
            else "one column of images")
    raise PatchError(f"expected {what} (base64 PNG/PGM strings or nested pixel lists), or "
                     f"pixel columns; got {frame.shape[1]} columns of types "
                     f"{sorted({str(t) for t in frame.dtypes})}")


def cell(value, name: str, shape: tuple[int, ...], decode: Decoder) -> np.ndarray:
    """Returns one table cell as an image of `shape`: a base64 string or bytes is decoded,
    a nested list of numbers is taken as pixels (integers stay integers)."""
    if isinstance(value, str):
        try:
            value = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as err:
            raise PatchError(f"{name} is not valid base64: {err}") from err
    if isinstance(value, (bytes, bytearray)):
        if len(shape) != 2:
            raise PatchError(f"{name} is one image; a pair needs two columns (baseline, abnormal)")
        try:
            return decode(bytes(value), name)
        except ImageError as err:
            raise PatchError(str(err)) from err
    try:
        pixels = np.asarray(value)
    except ValueError as err:
        raise PatchError(f"{name} is ragged: {err}") from err
    if pixels.dtype.kind not in "iuf" or pixels.shape != tuple(shape):
        raise PatchError(f"{name} must be a base64 image or {' x '.join(map(str, shape))} "
                         f"numbers, got {pixels.dtype} values shaped {pixels.shape}")
    return pixels
