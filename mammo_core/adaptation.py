"""Adapting a model to a new site's intensity scale from a batch of its unlabelled patches.

A single patch does not carry its scanner's gain, but a batch does. Each patch is
described by robust statistics (`patch_features`): the logs of its interquartile range
and of its fine texture's scale (its contrast: a few bright calcification pixels barely
move either), its mean intensity (its brightness: a contrast stretch around the mean
leaves it) and a scale-free texture peak. They differ between the classes (abnormal
patches are brighter and busier), so a plain ratio of medians would depend on the
batch's class mix. Instead the training patches' statistics are kept per class
(`IntensityReference`: a small Gaussian mixture per class), and a site's batch is
explained as that reference shifted by a contrast gain g (both log scales + log g) and
an offset b (mean + b) under an unknown class mix, fitted together by maximum likelihood
(the mix by EM at each shift). The class mix is estimated, not assumed, which is what
keeps the gain from following the prevalence. A bootstrap over the batch gives the interval (over
whole cases when the patches' cases are known: a batch's patches of one case share its
anatomy, and a batch of few cases moves the estimate as much as its cases differ); a
component whose interval holds the identity is left at the identity, so an unshifted
site maps to itself.

A noisier scanner raises every scale feature, which a gain alone would explain by
stretching the contrast, and compressing a noisy site's contrast hides calcifications.
So the reference also keeps the densities of the training patches with each of
NOISE_LEVELS of white noise added, and the fit searches the noise level beside the gain
and offset: the gap between the level-2 and level-1 texture scales moves with noise, not
with a gain. A noise whose bootstrap interval clears zero is shrunk out of the site's
patches (`wavelet.denoised`) before the gain is undone.

`IntensityMap.apply` undoes the shift per patch: denoise at the site's noise, then
x -> mean + (x - mean) / g - b.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import pywt
from scipy.special import logsumexp

from mammo_core.wavelet import denoised

FEATURES = ("log_iqr", "mean", "log_detail_peak", "log_detail_scale", "log_fine_scale")
# what a contrast gain g (by log g) and an offset b (by b) move each feature by
_MOVED_BY = {"log_iqr": (1.0, 0.0), "mean": (0.0, 1.0), "log_detail_peak": (0.0, 0.0),
             "log_detail_scale": (1.0, 0.0), "log_fine_scale": (1.0, 0.0)}
# Noise sigmas (share of full scale, on the training scale) added to the training patches
# at registration to measure the features of a noisier scanner: a site's noise is found
# among them, as its gain and offset are on a grid
NOISE_LEVELS = (0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04)
# How much better (log-likelihood) a noise level must explain a batch than none: a few
# cases' finer texture reads as a little noise. `benchmarks/adapt_spread.py --evidence`
# measures it per shift (docs/benchmarks.md#adapt-noise).
NOISE_EVIDENCE = 20.0
_FLOOR_IQR = 1e-4  # a flat patch (all one value) still has a finite log IQR
# an outlier's density floor (per unit of feature space, on the standardised scale): a few
# artefact patches cannot drag the fit to explain them
_OUTLIER_SHARE, _OUTLIER_DENSITY = 0.02, 1e-3
_COARSE = (np.arange(-1.1, 1.1001, 0.05), np.arange(-0.25, 0.2501, 0.02))
_FINE = (np.arange(-0.05, 0.0501, 0.005), np.arange(-0.02, 0.0201, 0.002))
_LOCAL = (0.3, 0.08)  # a bootstrap draw's coarse window around the batch's (log gain, offset)
_EM_STEPS = 25
# Sets of cases drawn from the training patches to measure how far the estimate moves
# between two sets of cases of the same scanner (anatomy, not acquisition).
_CASE_SETS, _CASES_PER_SET = 60, 10


class AdaptationError(ValueError):
    """The sample cannot give a mapping that helps (too small, too uncertain, no reference)."""


def patch_features(units: np.ndarray) -> np.ndarray:
    """Returns (N, 4) FEATURES of [0, 1] patches (N, H, W); pairs (N, 2, H, W) count each
    patch of a pair.

    log_iqr moves by log g under a contrast gain g, mean by b under an offset b, and
    log_detail_peak (the 99th percentile of the level-2 wavelet details' magnitude over
    their median: how far the sharpest structures stand out of the texture) by neither,
    which is what tells the classes apart whatever the site's scale. log_detail_scale
    (the log of that median) moves by log g too: fine texture varies less between
    patients than the IQR does (adapt_spread.py --statistics), so it steadies the gain.
    """
    images = np.asarray(units, dtype=np.float64).reshape(-1, *units.shape[-2:])
    flat = images.reshape(len(images), -1)
    q25, q75 = np.percentile(flat, [25, 75], axis=1)
    coefficients = pywt.wavedec2(images, "sym3", level=min(2, _levels(images.shape[1:])),
                                 axes=(1, 2))
    details = _magnitudes(coefficients[1])  # the coarsest detail level kept: level 2
    scale = np.maximum(np.median(details, axis=1), 1e-9)
    peak = np.percentile(details, 99, axis=1) / scale
    fine = np.median(_magnitudes(coefficients[-1]), axis=1)  # level 1
    return np.stack([np.log(np.maximum(q75 - q25, _FLOOR_IQR)), flat.mean(axis=1),
                     np.log(np.maximum(peak, 1.0)), np.log(np.maximum(scale, _FLOOR_IQR)),
                     np.log(np.maximum(fine, _FLOOR_IQR))], axis=1)


def _magnitudes(bands) -> np.ndarray:
    """Returns (N, coefficients): the |details| of one level's three bands, per image."""
    return np.concatenate([np.abs(b).reshape(len(b), -1) for b in bands], axis=1)


def _levels(shape: tuple[int, int]) -> int:
    return max(1, pywt.dwtn_max_level(shape, "sym3"))


@dataclass(frozen=True)
class ClassDensity:
    """A Gaussian mixture over FEATURES: weights (C,), means (C, F), covariances (C, F, F)."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray

    def log_density(self, points: np.ndarray) -> np.ndarray:
        """Returns the log density of points (..., F)."""
        return logsumexp(np.stack([constant - 0.5 * ((d @ inverse) * d).sum(axis=-1)
                                   for constant, inverse, d in self._centred(points)]), axis=0)

    def shifted_log_density(self, points: np.ndarray, shifts: np.ndarray) -> np.ndarray:
        """Returns the log density of `points` (n, F) moved back by each of `shifts`
        (G, F), as (G, n): log_density(points[None] - shifts[:, None]), with the quadratic
        form expanded so that no (G, n, F) array is built (the grid search's cost)."""
        logs = []
        for constant, inverse, d in self._centred(points):
            maha = (((d @ inverse) * d).sum(axis=1)[None, :]
                    - 2 * (shifts @ inverse) @ d.T
                    + ((shifts @ inverse) * shifts).sum(axis=1)[:, None])
            logs.append(constant - 0.5 * maha)
        return logsumexp(np.stack(logs), axis=0)

    def _centred(self, points: np.ndarray):
        """Yields per component (log weight and normalisation, inverse covariance, points
        minus the mean)."""
        for w, mu, cov in zip(self.weights, self.means, self.covariances):
            (_, logdet) = np.linalg.slogdet(cov)
            yield (np.log(w) - 0.5 * (logdet + len(mu) * np.log(2 * np.pi)),
                   np.linalg.inv(cov), points - mu)

    def to_dict(self) -> dict:
        return {"weights": self.weights.tolist(), "means": self.means.tolist(),
                "covariances": self.covariances.tolist()}

    @classmethod
    def from_dict(cls, raw: dict) -> ClassDensity:
        return cls(*(np.asarray(raw[k], dtype=np.float64)
                     for k in ("weights", "means", "covariances")))


@dataclass(frozen=True)
class IntensityReference:
    """The training patches' intensity statistics: per class a density of FEATURES, and
    robust summaries for people (medians and 5-95 % ranges of IQR and mean)."""

    densities: tuple[ClassDensity, ...]
    summary: dict = field(default_factory=dict)
    # std of (log gain, offset) estimated from sets of training cases: same scanner, other
    # anatomy; a site's shift inside this spread is not evidence of another scanner
    case_spread: tuple[float, float] = (0.0, 0.0)
    # the FEATURES the densities are over: models registered before log_detail_scale
    # keep the first three
    features: tuple[str, ...] = FEATURES
    # per NOISE_LEVELS sigma, the densities of the training patches with that noise added;
    # empty for models registered before noise was searched (their sites get none)
    noisy: tuple[tuple[float, tuple[ClassDensity, ...]], ...] = ()

    def levels(self):
        """Yields (noise sigma on the training scale, this reference with the densities of
        the training patches at that noise): 0 (itself) first."""
        yield 0.0, self
        for sigma, densities in self.noisy:
            yield sigma, replace(self, densities=densities, noisy=())

    def columns(self, features: np.ndarray) -> np.ndarray:
        """Returns this reference's columns of patch_features' (N, len(FEATURES)) output."""
        return features[:, [FEATURES.index(name) for name in self.features]]

    def moves(self) -> np.ndarray:
        """Returns (2, F): what a log gain (row 0) and an offset (row 1) move each feature by."""
        return np.array([_MOVED_BY[name] for name in self.features]).T

    def refitted(self, features: np.ndarray, labels: np.ndarray, components: int = 2,
                 seed: int = 0) -> IntensityReference:
        """Returns this reference with its densities fitted again on other patches'
        features (patch_features' output) and labels, starting from its own; the summary
        and case spread are kept, the noisy densities dropped: it searches no noise
        (benchmarks/adapt_spread.py --training)."""
        return replace(self, densities=_densities(self.columns(features), labels, components,
                                                  seed, self.densities), noisy=())

    def to_dict(self) -> dict:
        return {"features": list(self.features),
                "densities": [d.to_dict() for d in self.densities],
                "summary": self.summary, "case_spread": list(self.case_spread),
                "noisy": [{"sigma": sigma, "densities": [d.to_dict() for d in densities]}
                          for sigma, densities in self.noisy]}

    @classmethod
    def from_dict(cls, raw: dict) -> IntensityReference:
        def densities(block: list) -> tuple[ClassDensity, ...]:
            return tuple(ClassDensity.from_dict(d) for d in block)

        return cls(densities(raw["densities"]), raw["summary"],
                   tuple(raw.get("case_spread", (0.0, 0.0))),
                   tuple(raw.get("features", FEATURES[:3])),
                   tuple((float(level["sigma"]), densities(level["densities"]))
                         for level in raw.get("noisy", ())))


def fit_reference(units: np.ndarray, labels: np.ndarray, cases: np.ndarray | None = None,
                  components: int = 2, seed: int = 0) -> IntensityReference:
    """Returns the reference of training patches (N, H, W) or pairs, with their labels:
    the densities of their features, and of their features with each of NOISE_LEVELS of
    white noise added (seeded); with their `cases`, also the estimate's spread between
    sets of cases (`case_spread`, measured without noise)."""
    features = patch_features(units)
    per_image = np.repeat(labels, len(features) // len(labels))
    densities = _densities(features, per_image, components, seed)
    rng = np.random.default_rng(seed)
    noisy = tuple((sigma, _densities(patch_features(units + rng.normal(0.0, sigma, units.shape)),
                                     per_image, components, seed, densities))
                  for sigma in NOISE_LEVELS)
    reference = IntensityReference(densities, summarize(features, per_image), noisy=noisy)
    if cases is None or len(np.unique(cases)) < 2 * _CASES_PER_SET:
        return reference
    per_case = np.repeat(cases, len(features) // len(cases))
    return replace(reference, case_spread=case_spread(features, per_case, per_image,
                                                      components, seed, reference.densities))


def _densities(features: np.ndarray, labels: np.ndarray, components: int, seed: int,
               start: tuple[ClassDensity, ...] | None = None) -> tuple[ClassDensity, ...]:
    """Returns a Gaussian mixture of the features per class, in label order; from the
    mixtures `start` (of a close sample) where their component counts fit, else from
    k-means."""
    from sklearn.mixture import GaussianMixture

    densities = []
    for i, label in enumerate(sorted(set(labels.tolist()))):
        own = features[labels == label]
        if len(own) < 20:  # too few for a mixture: one Gaussian, variances regularised
            cov = np.diag(own.var(axis=0) + 1e-4)
            densities.append(ClassDensity(np.ones(1), own.mean(axis=0)[None], cov[None]))
            continue
        k = max(1, min(components, len(own) // 20))
        warm = {}
        if start is not None and len(start[i].weights) == k:
            warm = {"weights_init": start[i].weights, "means_init": start[i].means,
                    "precisions_init": np.linalg.inv(start[i].covariances)}
        gmm = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=seed,
                              **warm)
        gmm.fit(own)
        densities.append(ClassDensity(gmm.weights_, gmm.means_, gmm.covariances_))
    return tuple(densities)


def case_spread(features: np.ndarray, cases: np.ndarray, labels: np.ndarray,
                components: int, seed: int,
                start: tuple[ClassDensity, ...] | None = None) -> tuple[float, float]:
    """Returns the std of the (log gain, offset) estimated from sets of _CASES_PER_SET
    training cases against a reference fitted without them: what anatomy alone moves the
    estimate by for cases the reference has not seen (a site's are never in it). Each
    refit starts from `start`, the mixtures of all the cases (a third of the time)."""
    rng = np.random.default_rng(seed)
    names = np.unique(cases)
    estimates = []
    for _ in range(_CASE_SETS):
        held = np.isin(cases, rng.choice(names, _CASES_PER_SET, replace=False))
        others = _densities(features[~held], labels[~held], components, seed, start)
        estimates.append(fit_shift(features[held], IntensityReference(others))[:2])
    spread = np.std(np.array(estimates), axis=0)
    return float(spread[0]), float(spread[1])


def summarize(features: np.ndarray, labels: np.ndarray) -> dict:
    """Returns robust summaries of patch IQR and mean, overall and per class."""
    def block(f: np.ndarray) -> dict:
        iqr = np.exp(f[:, 0])
        return {"patches": int(len(f)), "iqr_median": float(np.median(iqr)),
                "iqr_p05": float(np.percentile(iqr, 5)), "iqr_p95": float(np.percentile(iqr, 95)),
                "mean_median": float(np.median(f[:, 1])),
                "mean_p05": float(np.percentile(f[:, 1], 5)),
                "mean_p95": float(np.percentile(f[:, 1], 95))}
    return {"all": block(features)} | {f"class_{k}": block(features[labels == k])
                                        for k in sorted(set(labels.tolist()))}


@dataclass(frozen=True)
class IntensityMap:
    """A site's contrast gain and offset against the training reference, with their
    bootstrap intervals; `apply` maps the site's patches onto the training scale."""

    gain: float = 1.0
    offset: float = 0.0
    gain_interval: tuple[float, float] = (1.0, 1.0)
    offset_interval: tuple[float, float] = (0.0, 0.0)
    patches: int = 0
    class_shares: tuple[float, ...] = ()
    estimate: tuple[float, float] = (1.0, 0.0)  # the point estimate before snapping
    cases: int = 0  # distinct cases the bootstrap drew from (0: unknown, patches drawn)
    # std of the site's white noise beyond the training patches' (0: none shrunk out)
    noise: float = 0.0
    noise_interval: tuple[float, float] = (0.0, 0.0)

    @property
    def identity(self) -> bool:
        return self.gain == 1.0 and self.offset == 0.0 and self.noise == 0.0

    def apply(self, units: np.ndarray) -> np.ndarray:
        """Returns [0, 1] patches (N, H, W) or pairs mapped onto the training scale: the
        site's extra noise shrunk out first (it was added after the gain), then the gain
        and offset undone."""
        if self.identity:
            return units
        units = np.asarray(units, dtype=np.float32)
        if self.noise > 0.0:
            units = denoised(units, self.noise)
        mean = units.mean(axis=(-2, -1), keepdims=True)
        mapped = mean + (units - mean) / np.float32(self.gain) - np.float32(self.offset)
        return np.clip(mapped, 0.0, 1.0).astype(np.float32)

    def describe(self) -> str:
        """Returns one line: the mapping and its intervals (and the estimated class mix)."""
        shares = ", ".join(f"{s:.2f}" for s in self.class_shares)
        return (f"contrast gain {self.gain:.3f} (95 % interval {self.gain_interval[0]:.3f}-"
                f"{self.gain_interval[1]:.3f}), offset {self.offset:+.4f} "
                f"({self.offset_interval[0]:+.4f} to {self.offset_interval[1]:+.4f}) from "
                f"{self.patches} patches"
                + (f" of {self.cases} cases" if self.cases else " (cases unknown)")
                + (f"; white noise sigma {self.noise:.4f} ({self.noise_interval[0]:.4f}-"
                   f"{self.noise_interval[1]:.4f}) shrunk out" if self.noise else "")
                + f"; estimated class shares {shares}"
                + (" (identity: the data show no shift)" if self.identity else ""))

    def to_dict(self) -> dict:
        return {"gain": self.gain, "offset": self.offset, "gain_interval": list(self.gain_interval),
                "offset_interval": list(self.offset_interval), "patches": self.patches,
                "class_shares": list(self.class_shares), "estimate": list(self.estimate),
                "cases": self.cases, "noise": self.noise,
                "noise_interval": list(self.noise_interval)}

    @classmethod
    def from_dict(cls, raw: dict) -> IntensityMap:
        return cls(float(raw["gain"]), float(raw["offset"]), tuple(raw["gain_interval"]),
                   tuple(raw["offset_interval"]), int(raw["patches"]),
                   tuple(raw["class_shares"]), tuple(raw.get("estimate", (1.0, 0.0))),
                   int(raw.get("cases", 0)), float(raw.get("noise", 0.0)),
                   tuple(raw.get("noise_interval", (0.0, 0.0))))


class SiteShift(NamedTuple):
    """A site's fitted shift against the reference."""

    log_gain: float
    offset: float
    shares: np.ndarray  # the class mix
    noise: float = 0.0  # sigma of the site's white noise beyond the training patches'


def fit_shift(features: np.ndarray, reference: IntensityReference,
              near: SiteShift | None = None) -> SiteShift:
    """Returns the maximum-likelihood SiteShift of a site's patch features (patch_features'
    output) under the reference: (log gain, offset) on a coarse grid under each of the
    reference's noise levels (the training patches' densities with that noise added), then
    a fine grid around the best point at its level. A noise level must beat none by
    NOISE_EVIDENCE in log-likelihood: a few cases' finer texture reads as a little noise.

    With `near` (the whole batch's fit, for a bootstrap draw of it) only the coarse points
    within _LOCAL of it, at its noise level and the two beside, are searched; a best point
    on that window's edge is searched again on the whole grid, so the window never clips
    a draw."""
    levels = list(reference.levels())
    grid, picked = _COARSE, levels
    if near is not None:
        grid, picked = _window(near, levels)
    fits = _coarse_fits(features, picked, grid)
    best = max(fits, key=lambda fit: fit.loglik)
    if best.sigma > 0.0 and fits[0].sigma == 0.0 and best.loglik - fits[0].loglik < NOISE_EVIDENCE:
        best = fits[0]  # noise barely explains it better: none
    if near is not None and _on_edge(best.shift, grid):
        return fit_shift(features, reference)
    _, fine = _best_on(features, best.reference, _FINE, (best.shift.log_gain, best.shift.offset))
    # the site's noise on its own scale: the training scale's sigma times its gain
    return fine._replace(noise=float(best.sigma * np.exp(fine.log_gain)))


def noise_evidence(features: np.ndarray, reference: IntensityReference) -> float:
    """Returns how much better (log-likelihood, coarse grid) the reference's best noise
    level explains a batch's features than none: what fit_shift weighs against
    NOISE_EVIDENCE (benchmarks/adapt_spread.py --evidence)."""
    fits = _coarse_fits(features, list(reference.levels()), _COARSE)
    return max(fit.loglik for fit in fits[1:]) - fits[0].loglik if len(fits) > 1 else 0.0


class _LevelFit(NamedTuple):
    """The best coarse-grid shift under one noise level."""

    loglik: float
    shift: SiteShift
    sigma: float  # the level's noise, on the training scale
    reference: IntensityReference  # the reference at that level


def _coarse_fits(features: np.ndarray, levels: list, grid) -> list[_LevelFit]:
    """Returns per (sigma, reference at that noise) of `levels` the best shift on `grid`."""
    return [_LevelFit(*_best_on(features, at, grid, (0.0, 0.0)), sigma, at)
            for sigma, at in levels]


def _window(near: SiteShift, levels: list) -> tuple[tuple[np.ndarray, np.ndarray], list]:
    """Returns the coarse grid's points within _LOCAL of `near`, and the noise levels at and
    beside its own."""
    grid = tuple(axis[np.abs(axis - centre) <= reach + 1e-9]
                 for axis, centre, reach in zip(_COARSE, (near.log_gain, near.offset), _LOCAL))
    own = near.noise / np.exp(near.log_gain)
    i = int(np.argmin([abs(sigma - own) for sigma, _ in levels]))
    return grid, levels[max(0, i - 1): i + 2]


def _on_edge(fit: SiteShift, grid: tuple[np.ndarray, np.ndarray]) -> bool:
    """Whether `fit` lies on an edge of a window of the coarse grid that is not its edge."""
    return any(value in (axis[0], axis[-1]) and value not in (full[0], full[-1])
               for value, axis, full in zip((fit.log_gain, fit.offset), grid, _COARSE))


def _best_on(features: np.ndarray, reference: IntensityReference, grid, centre
             ) -> tuple[float, SiteShift]:
    """Returns the log-likelihood and SiteShift of the best (log gain, offset) of `grid`
    around `centre`."""
    s, b = np.meshgrid(grid[0] + centre[0], grid[1] + centre[1], indexing="ij")
    shifts = np.stack([s.ravel(), b.ravel()], axis=1)
    loglik, shares = _profile(reference.columns(features), shifts, reference)
    i = int(np.argmax(loglik))
    return float(loglik[i]), SiteShift(float(shifts[i, 0]), float(shifts[i, 1]), shares[i])


def _profile(features: np.ndarray, shifts: np.ndarray, reference: IntensityReference
             ) -> tuple[np.ndarray, np.ndarray]:
    """Returns per shift the log-likelihood with the class mix fitted by EM, and that mix."""
    full = shifts @ reference.moves()  # (G, F): each feature moved by its share
    log_d = np.stack([d.shifted_log_density(features, full)  # (K, G, n)
                      for d in reference.densities])
    density = np.exp(log_d)
    shares = np.full((len(shifts), len(reference.densities)), 1 / len(reference.densities))
    for _ in range(_EM_STEPS):
        joint = shares.T[:, :, None] * density  # (K, G, n)
        total = joint.sum(axis=0) + 1e-300
        shares = (joint / total).mean(axis=2).T
    mixed = (shares.T[:, :, None] * density).sum(axis=0)
    loglik = np.log((1 - _OUTLIER_SHARE) * mixed + _OUTLIER_SHARE * _OUTLIER_DENSITY).sum(axis=1)
    return loglik, shares


def estimate_map(units: np.ndarray, reference: IntensityReference, *, bootstrap: int = 200,
                 level: float = 0.95, min_patches: int = 16, max_gain_ratio: float = 2.0,
                 cases: np.ndarray | None = None, seed: int = 0) -> IntensityMap:
    """Returns the site's IntensityMap from its unlabelled [0, 1] patches.

    The interval joins the bootstrap over the batch and the reference's between-case
    spread (two sets of cases of one scanner differ too); a component whose interval holds
    the identity stays at the identity. The extra noise's interval is the bootstrap's
    alone (anatomy adds no noise); it is shrunk out where that interval clears zero.
    With the patches' `cases` (one id per patch, e.g.
    from their file names) the bootstrap draws whole cases: patches of one case share its
    anatomy, so a batch of few cases is as uncertain as its cases are few. Raises
    AdaptationError for fewer than `min_patches` patches, or a gain interval wider than
    `max_gain_ratio` (upper / lower; 2: it cannot tell a gain from its double): too
    uncertain to help.
    """
    features = patch_features(units)
    if len(features) < min_patches:
        raise AdaptationError(f"{len(features)} patches are too few to estimate a site's "
                              f"intensity scale; at least {min_patches} are needed")
    if cases is not None and len(cases) != len(units):
        raise ValueError(f"{len(cases)} case ids for {len(units)} patches")
    distinct = 0 if cases is None else len(np.unique(cases))
    n_cases = distinct if distinct >= 2 else 0  # one case: nothing to draw but its patches
    whole = fit_shift(features, reference)
    log_gain, offset, shares, noise = whole
    draws = np.array([(f.log_gain, f.offset, f.noise) for f in (
        fit_shift(features[rows], reference, near=whole) for rows in _resamples(
            len(features), cases if n_cases else None, bootstrap, seed))])
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail], axis=0)
    if np.exp(high[0] - low[0]) > max_gain_ratio:
        of_cases = f" of {n_cases} cases" if n_cases else ""
        raise AdaptationError(
            f"the site's contrast gain is too uncertain to help: {np.exp(log_gain):.2f} with a "
            f"{level:.0%} interval {np.exp(low[0]):.2f}-{np.exp(high[0]):.2f} from "
            f"{len(features)} patches{of_cases}; add patches of the site (of more cases)")
    (s_lo, b_lo), (s_hi, b_hi) = _with_case_spread((log_gain, offset), low[:2], high[:2],
                                                   reference.case_spread, level)
    gain = 1.0 if s_lo <= 0.0 <= s_hi else float(np.exp(log_gain))
    shift = 0.0 if b_lo <= 0.0 <= b_hi else float(offset)
    # a scanner's noise is no matter of anatomy: its bootstrap interval alone decides
    return IntensityMap(gain, shift, (float(np.exp(s_lo)), float(np.exp(s_hi))),
                        (float(b_lo), float(b_hi)), len(features),
                        tuple(float(s) for s in shares), (float(np.exp(log_gain)), float(offset)),
                        n_cases, noise if low[2] > 0.0 else 0.0,
                        (float(low[2]), float(high[2])))


def _resamples(n: int, cases: np.ndarray | None, draws: int, seed: int):
    """Yields `draws` bootstrap row sets of n feature rows: rows at random, or with `cases`
    (per patch; a pair's two images share theirs) whole cases at random."""
    rng = np.random.default_rng(seed)
    if cases is None:
        for _ in range(draws):
            yield rng.integers(0, n, n)
        return
    per_row = np.repeat(np.asarray(cases), n // len(cases))
    names, index = np.unique(per_row, return_inverse=True)
    members = [np.flatnonzero(index == k) for k in range(len(names))]
    for _ in range(draws):
        yield np.concatenate([members[k] for k in rng.integers(0, len(names), len(names))])


def _with_case_spread(estimate, low, high, spread, level: float):
    """Returns the interval (low, high) widened by the between-case spread: each half-width
    and the spread's normal quantile added in quadrature."""
    from scipy.stats import norm

    z = norm.ppf(0.5 + level / 2)
    estimate = np.asarray(estimate)
    below = np.sqrt((estimate - low) ** 2 + (z * np.asarray(spread)) ** 2)
    above = np.sqrt((high - estimate) ** 2 + (z * np.asarray(spread)) ** 2)
    return estimate - below, estimate + above
