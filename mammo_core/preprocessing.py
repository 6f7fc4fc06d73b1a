"""Batch preprocessing of patches: scaling, the wavelet filter, optional CLAHE.

All functions take a batch shaped (N, H, W) and work on the whole batch at once; none
of them learns anything from the data, so applying them before the fold split leaks
nothing across folds.
"""
from __future__ import annotations

import warnings

import numpy as np
import pywt

from mammo_core.config import ClaheConfig, PreprocessingConfig, WaveletConfig
from mammo_core.images import as_unit


def wavelet_filter(images: np.ndarray, config: WaveletConfig) -> np.ndarray:
    """Returns the wavelet-filtered batch, same shape as `images`, float32.

    2-D decomposition to `config.level`; the approximation is zeroed (smooth background),
    detail levels in `drop_detail_levels` are zeroed (noise) and the other detail
    coefficients survive only where |c| > k * sigma of their own sub-band and image.
    """
    if images.ndim != 3:
        raise ValueError(f"expected a batch shaped (N, H, W), got {images.shape}")
    with warnings.catch_warnings():
        # Level 3 on a 60 px patch is deliberate (the study's filter); pywt warns about
        # boundary effects, which the cropped reconstruction tolerates.
        warnings.filterwarnings("ignore", message="Level value of")
        coeffs = pywt.wavedec2(images, config.family, level=config.level, axes=(-2, -1))
    if config.drop_approximation:
        coeffs[0] = np.zeros_like(coeffs[0])
    # coeffs[1] holds the coarsest details (level `config.level`), coeffs[-1] level 1
    for index in range(1, len(coeffs)):
        level = config.level - index + 1
        if level in config.drop_detail_levels:
            coeffs[index] = tuple(np.zeros_like(band) for band in coeffs[index])
        else:
            coeffs[index] = tuple(_keep_strong(band, config.threshold_k) for band in coeffs[index])
    restored = pywt.waverec2(coeffs, config.family, axes=(-2, -1))
    height, width = images.shape[-2:]
    return restored[..., :height, :width].astype(np.float32)


def clahe(images: np.ndarray, config: ClaheConfig) -> np.ndarray:
    """Returns contrast-limited adaptive histogram equalisation of [0, 1] images."""
    from skimage.exposure import equalize_adapthist  # optional step: import only if used

    clipped = np.clip(images, 0.0, 1.0)
    return np.stack([equalize_adapthist(image, kernel_size=config.kernel_size,
                                        clip_limit=config.clip_limit)
                     for image in clipped]).astype(np.float32)


def preprocess(images: np.ndarray, config: PreprocessingConfig) -> np.ndarray:
    """Returns model-ready float32 images shaped (N, H, W, 1), or (N, 2, H, W, 1) for
    pairs of patches (N, 2, H, W), each patch preprocessed on its own.

    Steps, each switched in the config: scale to [0, 1], fixed contrast enhancement
    (`contrast_factor`), CLAHE, per-patch standardisation
    (`before`, `robust`, `noise`), wavelet filter, per-patch standardisation (`after`).
    CLAHE comes first because it expects intensities, not the signed wavelet output.
    """
    if images.ndim == 4 and images.shape[1] == 2 and images.shape[-1] != 1:
        return preprocess(images.reshape(-1, *images.shape[2:]), config).reshape(
            *images.shape, 1)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(f"expected images shaped (N, H, W) or (N, H, W, 1), got {images.shape}")
    out = as_unit(np.asarray(images))
    if config.contrast_factor != 1:
        out = adjust_contrast(out, config.contrast_factor)
    if config.clahe.enabled:
        out = clahe(out, config.clahe)
    if config.standardize == "before":
        out = standardize(out)
    elif config.standardize == "robust":
        out = standardize(out, robust=True)
    elif config.standardize == "noise":
        out = in_noise_units(out)
    if config.wavelet.enabled:
        out = wavelet_filter(out, config.wavelet)
    if config.standardize == "after":
        out = standardize(out)
    return out[..., np.newaxis]


def adjust_contrast(images: np.ndarray, factor: float) -> np.ndarray:
    """Returns each image's deviation from its own mean times `factor`, plus that mean,
    unclipped: what tf.image.adjust_contrast does to one channel (document 003's fixed
    contrast enhancement by 1.5 or 2)."""
    mean = images.mean(axis=(-2, -1), keepdims=True)
    return ((images - mean) * factor + mean).astype(np.float32)


def standardize(images: np.ndarray, robust: bool = False) -> np.ndarray:
    """Returns each image minus its mean, divided by its standard deviation: a gain or
    offset of the whole image no longer changes it.

    `robust` uses the median and 1.4826 x the median absolute deviation instead: the
    tissue's spread, which a few bright pixels (calcifications) barely move, so their
    contrast to the tissue survives the scaling. Where that spread is zero (over half of
    the patch flat or saturated) the standard deviation is used: every patch ends in units
    of its own spread (see `_centre_and_scale`).
    """
    axes = (-2, -1)
    if not robust:
        return _centre_and_scale(images, images.mean(axis=axes, keepdims=True), [_std(images)])
    centre = np.median(images, axis=axes, keepdims=True)
    return _centre_and_scale(images, centre, [_mad(images, centre), _std(images)])


def noise_level(images: np.ndarray) -> np.ndarray:
    """Returns each image's noise standard deviation, shaped (N, 1, 1): the median absolute
    finest diagonal Haar detail / 0.6745 (Donoho's estimator). Sparse structures such as
    calcifications barely move a median, so on the shared data it is the same for both
    classes (0.0087), while the patches' standard deviation differs twofold."""
    diagonal = pywt.dwt2(images.astype(np.float64), "haar", axes=(-2, -1))[1][2]
    return np.median(np.abs(diagonal), axis=(-2, -1), keepdims=True) / 0.6745


def in_noise_units(images: np.ndarray) -> np.ndarray:
    """Returns each image minus its median, divided by its noise_level: a gain changes
    signal and noise alike, so the result does not move with it, and the contrast of a
    calcification to the noise, its evidence, is kept. Added noise or blur move the divisor
    instead (docs/benchmarks.md, shift: noise units). A patch without measurable noise
    (flat, saturated or quantised smooth) falls back to its robust spread, then its
    standard deviation."""
    centre = np.median(images, axis=(-2, -1), keepdims=True)
    return _centre_and_scale(images, centre,
                             [noise_level(images), _mad(images, centre), _std(images)])


def _mad(images: np.ndarray, centre: np.ndarray) -> np.ndarray:
    return 1.4826 * np.median(np.abs(images - centre), axis=(-2, -1), keepdims=True)


def _std(images: np.ndarray) -> np.ndarray:
    return images.std(axis=(-2, -1), keepdims=True)


def _centre_and_scale(images: np.ndarray, centre: np.ndarray,
                      scales: list[np.ndarray]) -> np.ndarray:
    """Returns (images - centre) / scale, the scale of each image being the first of
    `scales` that is positive for it. Dividing by 1 where none is (as before) left flat
    or saturated patches in raw intensities, ~100x apart from the others' spread units;
    a constant image has nothing to scale and comes out as zeros under any divisor."""
    scale = scales[0]
    for fallback in scales[1:]:
        scale = np.where(scale > 0, scale, fallback)
    return ((images - centre) / np.where(scale > 0, scale, 1.0)).astype(np.float32)


def _keep_strong(band: np.ndarray, k: float) -> np.ndarray:
    sigma = band.std(axis=(-2, -1), keepdims=True)
    return np.where(np.abs(band) > k * sigma, band, 0.0)
