"""Checking raw patches from callers before they reach a model.

A packaged model accepts what people actually have: uint8 or uint16 pixels, integers
parsed from JSON, or floats already scaled to [0, 1]; with or without a channel axis.
Everything else is refused with a message that says what was expected.
"""
from __future__ import annotations

import numpy as np

from mammo_core.errors import ImageError
from mammo_core.images import as_unit


class PatchError(ValueError):
    """Raised for input that is not a batch of patches this model can score."""


def as_unit_patches(array: np.ndarray, image_size: tuple[int, int], bit_depth: int,
                    pairs: bool = False) -> np.ndarray:
    """Returns the batch as float32 (N, rows, columns) intensities in [0, 1]; with `pairs`,
    (N, 2, rows, columns): each item a (baseline, abnormal) pair of patches.

    uint8 and uint16 are scaled by their full range. Other integer arrays (JSON gives
    int64) hold raw intensities of the training data's `bit_depth` and must fit in it.
    Floats must be finite and already in [0, 1]. Raises PatchError naming the problem.
    """
    array = np.asarray(array)
    shape = (2, *image_size) if pairs else tuple(image_size)
    dims = ", ".join(map(str, shape))
    expected = f"(N, {dims}) or (N, {dims}, 1)" + (" (baseline, abnormal pairs)" if pairs else "")
    if array.ndim == len(shape) + 2 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != len(shape) + 1 or array.shape[1:] != shape:
        raise PatchError(f"expected patches shaped {expected}, got {tuple(array.shape)}")
    if array.shape[0] == 0:
        raise PatchError("expected at least one patch, got an empty batch")
    try:
        return as_unit(array, bit_depth)
    except ImageError as err:
        raise PatchError(f"{err} (the model was trained on {bit_depth}-bit data)") from err
