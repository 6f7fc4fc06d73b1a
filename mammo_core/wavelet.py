"""Wavelet-coefficient features: each patch as its flattened 2-D wavelet coefficients.

The representation of the earlier study (`db5`, level 4, details of levels 2-4) for the
classic classifiers. Computing it learns nothing from the data, so it is done once for
all images; any scaling that does learn (standardisation) belongs inside the folds.
`denoised` shrinks a noisier site's white noise out of its patches (adaptation.py).
"""
from __future__ import annotations

import warnings

import numpy as np
import pywt

from mammo_core.config import WaveletFeaturesConfig
from mammo_core.images import as_unit


def wavelet_features(images: np.ndarray, config: WaveletFeaturesConfig) -> np.ndarray:
    """Returns float32 features shaped (N, D): the kept coefficients of each image, flattened.

    `images` is a batch (N, H, W) of integer or [0, 1] float patches. The order is the
    approximation (if kept), then detail levels from coarsest to finest, each as its
    horizontal, vertical and diagonal sub-bands. With `config.magnitude`, absolute values.
    """
    if images.ndim != 3:
        raise ValueError(f"expected a batch shaped (N, H, W), got {images.shape}")
    units = as_unit(np.asarray(images))
    parts = [band.reshape(len(images), -1) for band in _kept_bands(units, config)]
    features = np.concatenate(parts, axis=1).astype(np.float32)
    return np.abs(features) if config.magnitude else features


def _kept_bands(images: np.ndarray, config: WaveletFeaturesConfig) -> list[np.ndarray]:
    with warnings.catch_warnings():
        # The study decomposes 60 px patches to level 4 on purpose; pywt warns that the
        # coarsest levels are dominated by boundary effects.
        warnings.filterwarnings("ignore", message="Level value of")
        coeffs = pywt.wavedec2(images, config.family, level=config.level, axes=(-2, -1))
    bands = [coeffs[0]] if config.keep_approximation else []
    for index in range(1, len(coeffs)):  # coeffs[1] is level `config.level`, coeffs[-1] level 1
        if config.level - index + 1 in config.keep_levels:
            bands += list(coeffs[index])
    return bands


def denoised(images: np.ndarray, sigma: float, levels: int = 2,
             wavelet: str = "sym3") -> np.ndarray:
    """Returns [0, 1] images (..., H, W) with white noise of std `sigma` shrunk out of
    their finest `levels` wavelet levels (BayesShrink: each band soft-thresholded at
    sigma^2 over its signal's std, so busy bands keep their structure and flat ones lose
    the noise), as float32."""
    coefficients = pywt.wavedec2(np.asarray(images, dtype=np.float64), wavelet,
                                 level=levels, axes=(-2, -1))
    shrunk = [coefficients[0]] + [tuple(_soft(band, sigma) for band in bands)
                                  for bands in coefficients[1:]]
    out = pywt.waverec2(shrunk, wavelet, axes=(-2, -1))[..., :images.shape[-2], :images.shape[-1]]
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _soft(band: np.ndarray, sigma: float) -> np.ndarray:
    """Returns one band soft-thresholded at BayesShrink's per-image threshold."""
    signal = np.sqrt(np.maximum((band ** 2).mean(axis=(-2, -1), keepdims=True) - sigma ** 2,
                                1e-12))
    threshold = sigma ** 2 / signal
    return np.sign(band) * np.maximum(np.abs(band) - threshold, 0.0)
