import numpy as np
import pytest
import pywt

from mammo_core.config import WaveletFeaturesConfig
from mammo_core.wavelet import denoised, wavelet_features


def patches(n=3, size=(60, 60)):
    return np.random.default_rng(0).integers(0, 256, (n, *size), dtype=np.uint8)


def expected_length(size, family, level, keep_levels, approximation):
    coeffs = pywt.wavedec2(np.zeros(size), family, level=level)
    total = coeffs[0].size if approximation else 0
    for index, bands in enumerate(coeffs[1:], 1):
        if level - index + 1 in keep_levels:
            total += sum(b.size for b in bands)
    return total


@pytest.mark.parametrize("family,level,keep,approx", [
    ("db5", 4, (2, 3, 4), False),    # the earlier study: 3 x (21² + 15² + 12²)
    ("haar", 3, (1,), False),
    ("sym3", 2, (1, 2), True),
    ("coif1", 3, (3,), True)])
def test_feature_length_matches_the_kept_sub_bands(family, level, keep, approx):
    config = WaveletFeaturesConfig(family=family, level=level, keep_levels=keep,
                                   keep_approximation=approx)
    features = wavelet_features(patches(), config)
    assert features.shape == (3, expected_length((60, 60), family, level, keep, approx))
    assert features.dtype == np.float32 and np.all(np.isfinite(features))


def test_study_representation_has_2430_coefficients():
    assert wavelet_features(patches(1), WaveletFeaturesConfig()).shape == (1, 2430)


def test_features_are_per_image_and_equal_pywavelets_on_one_image():
    images = patches(4)
    config = WaveletFeaturesConfig(family="haar", level=2, keep_levels=(2,))
    batch = wavelet_features(images, config)
    np.testing.assert_allclose(wavelet_features(images[2:3], config)[0], batch[2], rtol=1e-6)
    _, (h, v, d), _ = pywt.wavedec2(images[2] / 255.0, "haar", level=2)
    np.testing.assert_allclose(batch[2], np.concatenate([h.ravel(), v.ravel(), d.ravel()]),
                               rtol=1e-5, atol=1e-6)


def test_rejects_a_single_image_without_batch_axis():
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        wavelet_features(patches(1)[0], WaveletFeaturesConfig())


def test_magnitude_option_is_the_absolute_value_of_the_same_coefficients():
    config = WaveletFeaturesConfig(family="haar", level=2, keep_levels=(1, 2))
    signed = wavelet_features(patches(), config)
    magnitude = wavelet_features(patches(), WaveletFeaturesConfig(
        family="haar", level=2, keep_levels=(1, 2), magnitude=True))
    np.testing.assert_array_equal(magnitude, np.abs(signed))
    assert (signed < 0).any()


def test_denoised_shrinks_white_noise_and_keeps_the_structure():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:60, :60] / 60.0
    clean = np.stack([0.4 + 0.2 * np.sin(6 * x + k) * np.cos(4 * y) for k in range(8)])
    clean[:, 28:32, 28:32] += 0.3  # a bright speck, as a calcification
    noisy = clean + rng.normal(0.0, 0.02, clean.shape)
    out = denoised(noisy, 0.02)
    assert out.dtype == np.float32 and out.shape == clean.shape
    assert np.abs(out - clean).mean() < 0.6 * np.abs(noisy - clean).mean()
    assert out[:, 28:32, 28:32].mean() - out[:, :10, :10].mean() > 0.2  # the speck stays
    np.testing.assert_allclose(denoised(clean, 1e-6), clean, atol=1e-4)  # no noise: as is
