"""Resampling [0, 1] intensities to another size: the one rule every reader and decoder uses."""
from __future__ import annotations

import numpy as np
from PIL import Image


def resample(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Returns [0, 1] float32 pixels resampled (bilinear, antialiased when shrinking) to
    `size` (rows, columns)."""
    resized = Image.fromarray(np.asarray(pixels, dtype=np.float32)).resize(
        (size[1], size[0]), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
