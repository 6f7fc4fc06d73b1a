"""Checking raw patches from callers before they reach a model.

A packaged model accepts what people actually have: uint8 or uint16 pixels, integers
parsed from JSON, or floats already scaled to [0, 1]; with or without a channel axis.
Everything else is refused with a message that says what was expected.
"""
from __future__ import annotations

import numpy as np


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
    if array.dtype in (np.uint8, np.uint16):
        return array.astype(np.float32) / np.float32(np.iinfo(array.dtype).max)
    if np.issubdtype(array.dtype, np.integer):
        top = 2 ** bit_depth - 1
        if array.min() < 0 or array.max() > top:
            raise PatchError(f"integer pixels must lie in [0, {top}] ({bit_depth}-bit, like "
                             f"the training data), got [{array.min()}, {array.max()}]")
        return array.astype(np.float32) / np.float32(top)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise PatchError("patches contain NaN or infinite values")
        if array.min() < 0 or array.max() > 1:
            raise PatchError(f"float pixels must be intensities in [0, 1], got "
                             f"[{array.min():.4g}, {array.max():.4g}]; send integers for raw "
                             f"{bit_depth}-bit pixels")
        return array.astype(np.float32)
    raise PatchError(f"expected uint8, uint16, integer or float pixels, got dtype {array.dtype}")
