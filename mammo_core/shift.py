"""Controlled acquisition shifts of [0, 1] images: what another scanner or site might do.

Each shift is a pure function of a batch of intensities (N, H, W) in [0, 1] and returns a
batch of the same shape, clipped to [0, 1], so a model sees what a detector with another
gain, offset, gamma, noise or sharpness would have stored. Seeded where random.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.ndimage import gaussian_filter

from mammo_core.images import quantize, to_unit


@dataclass(frozen=True)
class Shift:
    """One named shift: `kind` and its `amount` (offset, factor, gamma, sigma or bits)."""

    kind: str
    amount: float

    @property
    def name(self) -> str:
        if self.kind == "none":
            return "none"
        return f"{self.kind} {self.amount:+g}" if self.kind == "brightness" else (
            f"{self.kind} {self.amount:g}")

    def apply(self, images: np.ndarray, seed: int = 0) -> np.ndarray:
        """Returns the shifted batch, float32 in [0, 1]."""
        out = KINDS[self.kind](np.asarray(images, dtype=np.float64), self.amount, seed)
        return np.clip(out, 0.0, 1.0).astype(np.float32)


def brightness(images: np.ndarray, offset: float, seed: int) -> np.ndarray:
    """Adds `offset` (a share of full scale) to every pixel."""
    return images + offset


def contrast(images: np.ndarray, factor: float, seed: int) -> np.ndarray:
    """Stretches each image around its own mean by `factor`."""
    mean = images.mean(axis=(-2, -1), keepdims=True)
    return mean + factor * (images - mean)


def gamma(images: np.ndarray, exponent: float, seed: int) -> np.ndarray:
    """Raises the intensities to `exponent` (< 1 brightens the mid-tones)."""
    return np.power(np.clip(images, 0.0, 1.0), exponent)


def noise(images: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Adds Gaussian noise of standard deviation `sigma` (share of full scale)."""
    return images + np.random.default_rng(seed).normal(0.0, sigma, images.shape)


def blur(images: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Blurs each image with a Gaussian of `sigma` pixels."""
    sigmas = (0,) * (images.ndim - 2) + (sigma, sigma)
    return gaussian_filter(images, sigma=sigmas)


def requantize(images: np.ndarray, bits: float, seed: int) -> np.ndarray:
    """Stores the images at `bits` (8 or 16) and reads them back."""
    return to_unit(quantize(np.clip(images, 0.0, 1.0).astype(np.float32), int(bits)), int(bits))


KINDS: dict[str, Callable[[np.ndarray, float, int], np.ndarray]] = {
    "brightness": brightness, "contrast": contrast, "gamma": gamma, "noise": noise,
    "blur": blur, "requantize": requantize}

# The grid: brightness offsets, contrast around each patch's mean, gamma, noise,
# blur and 16-bit re-quantisation; "none" is the unshifted reference.
STANDARD_SHIFTS = (
    Shift("none", 0.0),
    *(Shift("brightness", a) for a in (-0.10, -0.05, 0.05, 0.10)),
    *(Shift("contrast", a) for a in (0.8, 1.2, 1.5, 2.0)),
    *(Shift("gamma", a) for a in (0.8, 1.25)),
    *(Shift("noise", a) for a in (0.01, 0.02)),
    *(Shift("blur", a) for a in (0.5, 1.0)),
    Shift("requantize", 16),
)
KINDS["none"] = lambda images, amount, seed: images


def combined(images: np.ndarray, shifts: tuple[Shift, ...], seed: int = 0) -> np.ndarray:
    """Returns the batch with every shift applied in order (e.g. contrast, then brightness)."""
    for shift in shifts:
        images = shift.apply(images, seed)
    return images
