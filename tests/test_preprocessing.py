import numpy as np
import pytest

from mammo_core.config import ClaheConfig, PreprocessingConfig, WaveletConfig
from mammo_core.preprocessing import clahe, preprocess, wavelet_filter


def gradient_patch(size=(60, 60)) -> np.ndarray:
    rows, cols = np.mgrid[:size[0], :size[1]]
    return (0.3 + 0.4 * rows / size[0] + 0.2 * cols / size[1]).astype(np.float32)


@pytest.mark.parametrize("family", ["sym3", "haar", "db5"])
def test_keeps_bright_spot_and_removes_smooth_gradient(family):
    background = gradient_patch()
    spotted = background.copy()
    spotted[30:32, 30] = 1.0  # a 2-pixel calcification-like spot
    out = wavelet_filter(np.stack([background, spotted]), WaveletConfig(family=family))
    assert out.shape == (2, 60, 60)
    residual = np.abs(out[0]).max()
    assert residual < 0.05, "the smooth background should be (almost) removed"
    assert out[1, 30:32, 30].max() > 3 * residual, "the spot should stand out"


@pytest.mark.parametrize("shape", [(3, 60, 60), (1, 150, 150), (2, 128, 128), (1, 61, 47)])
def test_output_shape_equals_input_shape(shape):
    images = np.random.default_rng(0).random(shape, dtype=np.float32)
    assert wavelet_filter(images, WaveletConfig()).shape == shape


def test_batch_equals_one_by_one():
    images = np.random.default_rng(1).random((4, 60, 60), dtype=np.float32)
    batch = wavelet_filter(images, WaveletConfig())
    single = np.concatenate([wavelet_filter(im[None], WaveletConfig()) for im in images])
    np.testing.assert_allclose(batch, single, atol=1e-6)


def test_sigma_is_per_image_so_scaling_one_image_scales_only_its_output():
    base = np.random.default_rng(2).random((1, 60, 60), dtype=np.float32)
    other = np.random.default_rng(3).random((1, 60, 60), dtype=np.float32)
    out = wavelet_filter(np.concatenate([base, 10 * base, other]), WaveletConfig())
    np.testing.assert_allclose(out[1], 10 * out[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[2], wavelet_filter(other, WaveletConfig())[0], atol=1e-6)


def test_nothing_dropped_rebuilds_the_input():
    images = np.random.default_rng(4).random((2, 60, 60), dtype=np.float32)
    full = wavelet_filter(images, WaveletConfig(threshold_k=0.0, drop_detail_levels=(),
                                                drop_approximation=False))
    np.testing.assert_allclose(full, images, atol=1e-4)


def test_rejects_non_batch():
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        wavelet_filter(np.zeros((60, 60)), WaveletConfig())


def test_clahe_raises_local_contrast():
    image = np.full((1, 60, 60), 0.5, np.float32)
    image[0, :, 30:] = 0.55
    out = clahe(image, ClaheConfig(enabled=True))
    assert out.shape == image.shape and out.dtype == np.float32
    assert out[0, :, 30:].mean() - out[0, :, :30].mean() > 0.05


def test_preprocess_pipeline_switches():
    images = (np.random.default_rng(3).random((2, 60, 60)) * 255).astype(np.uint8)
    plain = preprocess(images, PreprocessingConfig(wavelet=WaveletConfig(enabled=False)))
    assert plain.shape == (2, 60, 60, 1) and plain.min() >= 0 and plain.max() <= 1
    filtered = preprocess(images, PreprocessingConfig())
    assert filtered.shape == (2, 60, 60, 1) and filtered.min() < 0  # signed wavelet output
    both = preprocess(images[..., None], PreprocessingConfig(clahe=ClaheConfig(enabled=True)))
    assert both.shape == (2, 60, 60, 1) and not np.allclose(both, filtered)
    with pytest.raises(ValueError, match="expected images shaped"):
        preprocess(images[0], PreprocessingConfig())


@pytest.mark.parametrize("mode", ["before", "after", "robust", "noise"])
def test_standardisation_makes_the_input_blind_to_gain_and_offset(mode):
    from mammo_core.config import PreprocessingConfig
    from mammo_core.shift import Shift, combined

    rng = np.random.default_rng(0)
    patches = rng.uniform(0.3, 0.5, (3, 60, 60)).astype(np.float32)
    patches[:, 30, 30] = 0.7  # a calcification-like bright pixel (still < 1 once shifted)
    config = PreprocessingConfig(standardize=mode)
    shifted = combined(patches, (Shift("contrast", 1.5), Shift("brightness", 0.05)))
    np.testing.assert_allclose(preprocess(shifted, config), preprocess(patches, config),
                               atol=1e-3)
    plain = preprocess(shifted, PreprocessingConfig())
    assert np.abs(plain - preprocess(patches, PreprocessingConfig())).max() > 0.01


def test_noise_level_measures_the_noise_not_the_tissue_or_the_calcifications():
    from mammo_core.preprocessing import in_noise_units, noise_level

    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:60, 0:60] / 60.0
    tissue = 0.4 + 0.1 * np.sin(6 * rows) * np.cos(4 * cols)  # smooth background
    patches = np.stack([tissue + rng.normal(0, sigma, (60, 60)) for sigma in (0.005, 0.02)])
    patches[:, 20:23, 30:33] += 0.3  # a bright cluster
    np.testing.assert_allclose(noise_level(patches).ravel(), [0.005, 0.02], rtol=0.15)
    assert patches.std(axis=(1, 2)).min() > 2 * 0.02  # what `before` would divide by
    units = in_noise_units(patches.astype(np.float32))
    # the cluster stands out by the same number of noise levels however the gain was set
    np.testing.assert_allclose(in_noise_units((3 * patches).astype(np.float32)), units,
                               rtol=1e-4, atol=1e-3)
    assert units[0, 21, 31] > 40 and np.median(units) == pytest.approx(0, abs=1)
    flat = in_noise_units(np.full((1, 60, 60), 0.5, dtype=np.float32))
    assert np.all(flat == 0)


def patches_with_a_saturated_one() -> np.ndarray:
    """Three patches: textured tissue, tissue with a saturated half (a film edge, a
    clipped detector) and a few bright spots, and a flat one."""
    rng = np.random.default_rng(0)
    tissue = 0.4 + 0.02 * rng.standard_normal((60, 60))
    saturated = tissue.copy()
    saturated[:, :40] = 1.0  # two thirds at the ceiling: median and MAD of those pixels
    saturated[50, 50] = saturated[52, 55] = 0.9
    return np.clip(np.stack([tissue, saturated, np.full((60, 60), 0.3)]), 0, 1).astype(np.float32)


@pytest.mark.parametrize("mode", ["before", "robust", "noise"])
def test_flat_and_saturated_patches_end_in_spread_units_like_the_others(mode):
    """Before, a patch whose MAD or noise level was zero kept raw intensities (|x| <= 1)
    while the others were divided by ~0.01: about 100x apart."""
    out = preprocess(patches_with_a_saturated_one(),
                     PreprocessingConfig(wavelet=WaveletConfig(enabled=False), standardize=mode))
    tissue, saturated, flat = (np.abs(x).max() for x in out)
    assert np.all(out[2] == 0) and flat == 0  # a constant patch has nothing to scale
    assert saturated > 1.5  # in units of its own spread, not left at raw intensities
    assert 0.02 < saturated / tissue < 50


def test_fixed_contrast_enhancement_is_tf_adjust_contrast_on_every_image():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    raw = rng.integers(0, 65536, (3, 20, 20)).astype(np.uint16)
    plain = preprocess(raw, PreprocessingConfig(wavelet=WaveletConfig(enabled=False)))
    enhanced = preprocess(raw, PreprocessingConfig(wavelet=WaveletConfig(enabled=False),
                                                   contrast_factor=2.0))
    expected = tf.image.adjust_contrast(tf.constant(plain), 2.0).numpy()
    np.testing.assert_allclose(enhanced, expected, atol=1e-5)
    assert enhanced.max() > 1.0  # unclipped, as adjust_contrast
    np.testing.assert_allclose(enhanced.mean(axis=(1, 2)), plain.mean(axis=(1, 2)), atol=1e-5)
