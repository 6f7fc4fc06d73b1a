"""Honesty baselines: what brightness alone achieves on the same split as the CNN.

On this data the maximum pixel value alone reaches ROC AUC ~0.89 and a logistic regression
on a few intensity features ~0.93, so a CNN has only learned something beyond brightness
if it clearly beats both on the same test images.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

FEATURE_NAMES = ("max", "mean", "std", "p99", "p95", "highpass_max", "highpass_std",
                 "bright_fraction")


def max_pixel_scores(images: np.ndarray) -> np.ndarray:
    """Returns each image's maximum value: a score that needs no training."""
    return images.reshape(len(images), -1).max(axis=1).astype(float)


def intensity_features(images: np.ndarray, blur_sigma: float = 2.0) -> np.ndarray:
    """Returns (N, 8) features per image, in the order of FEATURE_NAMES; (N, 16) for pairs
    of patches (N, 2, H, W): the baseline's features, then the abnormal patch's.

    The high-pass image is the image minus a Gaussian blur (sigma `blur_sigma` pixels);
    bright_fraction is the share of pixels above mean + 3 std.
    """
    if images.ndim == 4 and images.shape[1] == 2 and images.shape[-1] != 1:
        return np.hstack([intensity_features(images[:, k], blur_sigma) for k in (0, 1)])
    flat = images.reshape(len(images), -1).astype(np.float64)
    highpass = images - gaussian_filter(images.astype(np.float64), sigma=(0, blur_sigma, blur_sigma))
    highpass = highpass.reshape(len(images), -1)
    mean, std = flat.mean(axis=1), flat.std(axis=1)
    return np.column_stack([
        flat.max(axis=1), mean, std,
        np.percentile(flat, 99, axis=1), np.percentile(flat, 95, axis=1),
        highpass.max(axis=1), highpass.std(axis=1),
        (flat > (mean + 3 * std)[:, None]).mean(axis=1)])


def logistic_baseline(train_images: np.ndarray, train_labels: np.ndarray,
                      test_images: np.ndarray, seed: int = 0) -> np.ndarray:
    """Returns test-set probabilities of a logistic regression on intensity features: the
    positive class's (N,) for two classes, every class's (N, K) for more.

    The scaler and the model see the training images only.
    """
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    model.fit(intensity_features(train_images), train_labels)
    probabilities = model.predict_proba(intensity_features(test_images))
    return probabilities[:, 1] if probabilities.shape[1] == 2 else probabilities
