"""Controlled acquisition shifts."""
from __future__ import annotations

import numpy as np
import pytest

from mammo_core.shift import STANDARD_SHIFTS, Shift, combined

IMAGES = np.random.default_rng(0).uniform(0.2, 0.6, (4, 16, 16)).astype(np.float32)


def test_contrast_stretches_around_each_images_own_mean():
    out = Shift("contrast", 1.5).apply(IMAGES)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), IMAGES.mean(axis=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 1.5 * IMAGES.std(axis=(1, 2)), rtol=1e-4)


def test_brightness_gamma_noise_blur_and_requantisation():
    np.testing.assert_allclose(Shift("brightness", 0.05).apply(IMAGES), IMAGES + 0.05, atol=1e-6)
    assert (Shift("gamma", 0.8).apply(IMAGES) > IMAGES).all()  # < 1 brightens mid-tones
    noisy = Shift("noise", 0.02).apply(IMAGES, seed=1)
    assert 0.015 < (noisy - IMAGES).std() < 0.025
    np.testing.assert_array_equal(noisy, Shift("noise", 0.02).apply(IMAGES, seed=1))  # seeded
    assert Shift("blur", 1.0).apply(IMAGES).std() < IMAGES.std()
    np.testing.assert_allclose(Shift("requantize", 16).apply(IMAGES), IMAGES, atol=1e-5)


def test_every_shift_stays_in_range_and_keeps_the_shape():
    extreme = np.stack([np.zeros((8, 8)), np.ones((8, 8))]).astype(np.float32)
    for shift in STANDARD_SHIFTS:
        out = shift.apply(extreme)
        assert out.shape == extreme.shape and out.min() >= 0 and out.max() <= 1, shift.name
    assert [s.name for s in STANDARD_SHIFTS][:3] == ["none", "brightness -0.1", "brightness -0.05"]


def test_shifts_combine_in_order():
    both = combined(IMAGES, (Shift("contrast", 1.5), Shift("brightness", 0.05)))
    np.testing.assert_allclose(both, Shift("brightness", 0.05).apply(
        Shift("contrast", 1.5).apply(IMAGES)))
    with pytest.raises(KeyError):
        Shift("sharpen", 1.0).apply(IMAGES)
