"""How far `fit_shift`'s estimate moves between unlabelled batches of a registered model's
hold-out, against the between-case spread its intensity reference stores.

    python benchmarks/adapt_spread.py [--model-uri models:/mammo-microcal/3 (default: the champion)] [--draws 40]

Each draw splits the hold-out's cases in two as `adapt_bench.py` does, draws a batch of
`--size` patches at `--prevalence` from one half, shifts it, and fits (log gain, offset)
without a bootstrap (`--per-pool` batches from each half). Prints the mean and std of
the estimates per shift, within a pool and between pools, beside the reference's
`case_spread` (the std the interval assumes): a std above it means the
interval is too narrow for batches of this many cases; a mean away from the shift's true
log gain is a bias.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pywt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from adapt_bench import SHIFTS, batch_pool, draw, load_holdout  # noqa: E402
from mammo_core.adaptation import (NOISE_EVIDENCE, fit_shift, noise_evidence,  # noqa: E402
                                   patch_features)
from mammo_core.shift import combined  # noqa: E402

POOL_CASES = 9  # a batch pool of the hold-out's: half its 19 cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/microcal.yaml")
    parser.add_argument("--model-uri", default="",
                        help="default: the config's champion")
    parser.add_argument("--draws", type=int, default=40)
    parser.add_argument("--size", type=int, default=50)
    parser.add_argument("--prevalence", type=float, default=0.2)
    parser.add_argument("--statistics", action="store_true",
                        help="also: how far single intensity statistics move between "
                             "pools of 3 cases' normal tissue, hold-out and training")
    parser.add_argument("--per-pool", type=int, default=1,
                        help="batches per pool of cases: splits the spread into the part "
                             "within a pool (which patches) and between pools (which cases)")
    parser.add_argument("--training", action="store_true",
                        help="draw each pool from 9 training cases instead, left out of "
                             "a reference refitted without it: the estimator's own bias, "
                             "apart from the hold-out's anatomy")
    parser.add_argument("--evidence", action="store_true",
                        help="instead: per shift, how much better the best added-noise level "
                             "explains a batch than none (log-likelihood), against the "
                             "threshold fit_shift requires, and the noise it then reads")
    args = parser.parse_args()
    holdout = load_holdout(args.config, args.model_uri)
    if args.evidence:
        return evidence_table(holdout, args)
    _, uri, version, predictor, raw, labels, cases, *_ = holdout
    spread = predictor.reference.case_spread
    print(f"{uri} = v{version}: {len(np.unique(cases))} hold-out cases; "
          f"stored case_spread: log gain {spread[0]:.3f}, offset {spread[1]:.4f}\n")
    if args.training:
        raw, labels, cases = training_part(holdout)
        features = patch_features(raw)
        print(f"training cases instead: each pool of {POOL_CASES} of the "
              f"{len(np.unique(cases))} is left out of a reference refitted on the others\n")
    print("| shift | batches (pools) | log gain: mean ± std | offset: mean ± std "
          "| log gain std within a pool | between pools |\n|---|---:|---|---|---|---|")
    for name, shifts in SHIFTS:
        per_pool = []  # one list of (log gain, offset) per pool of cases
        for seed in range(args.draws):
            rng = np.random.default_rng(seed)
            pool = (np.isin(cases, rng.choice(np.unique(cases), POOL_CASES, replace=False))
                    if args.training else batch_pool(cases, rng))
            if len(np.unique(labels[pool])) < 2:  # a half without one class: no batch
                continue
            reference = (predictor.reference.refitted(features[~pool], labels[~pool])
                         if args.training else predictor.reference)
            shifted = combined(raw, shifts, seed=seed) if shifts else raw
            per_pool.append([fit_shift(patch_features(draw(
                shifted[pool], labels[pool], cases[pool], args.size, args.prevalence, rng)[0]),
                reference)[:2] for _ in range(args.per_pool)])
        e, pools = np.concatenate(per_pool), np.array(per_pool)
        print(f"| {name} | {len(e)} ({len(pools)}) | {e[:, 0].mean():+.3f} ± {e[:, 0].std():.3f} "
              f"| {e[:, 1].mean():+.4f} ± {e[:, 1].std():.4f} "
              f"| {pools[:, :, 0].std(axis=1).mean():.3f} | {pools[:, :, 0].mean(axis=1).std():.3f} |")
    if args.statistics:
        single_statistics(holdout)


def evidence_table(holdout, args) -> None:
    """Prints per shift the noise evidence of `--draws` batches (min / median / max), the
    share above the threshold, and the noise sigma fit_shift reads (mean ± std)."""
    predictor, raw, labels, cases = (holdout.predictor, holdout.raw, holdout.labels,
                                     holdout.cases)
    if not predictor.reference.noisy:
        sys.exit(f"{holdout.uri} keeps no noisy densities: register it with this version")
    print(f"threshold: {NOISE_EVIDENCE:g}\n\n| shift | evidence: min / median / max "
          "| above the threshold | noise sigma read |\n|---|---|---|---|")
    for name, shifts in SHIFTS:
        evidence, sigma = [], []
        for seed in range(args.draws):
            rng = np.random.default_rng(seed)
            pool = batch_pool(cases, rng)
            shifted = combined(raw, shifts, seed=seed) if shifts else raw
            features = patch_features(draw(shifted[pool], labels[pool], cases[pool],
                                           args.size, args.prevalence, rng)[0])
            evidence.append(noise_evidence(features, predictor.reference))
            sigma.append(fit_shift(features, predictor.reference).noise)
        e = np.array(evidence)
        print(f"| {name} | {e.min():+.1f} / {np.median(e):+.1f} / {e.max():+.1f} "
              f"| {np.mean(e >= NOISE_EVIDENCE):.0%} "
              f"| {np.mean(sigma):.4f} ± {np.std(sigma):.4f} |")


def training_part(holdout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns the [0, 1] patches, labels and cases the experts trained on (the reference's)."""
    dataset, trained = holdout.dataset, ~holdout.held
    return (holdout.predictor.unit_patches(dataset.images[trained]), dataset.labels[trained],
            dataset.cases[trained])


def statistic_values(units: np.ndarray) -> dict[str, np.ndarray]:
    """Returns per patch the log of statistics a contrast gain g moves by log g."""
    flat = units.reshape(len(units), -1).astype(np.float64)
    q05, q25, q75, q95 = np.percentile(flat, [5, 25, 75, 95], axis=1)
    bands = pywt.wavedec2(units.astype(np.float64), "haar", level=2, axes=(1, 2))
    mad = {level: np.median(np.concatenate([np.abs(b).reshape(len(units), -1)
                                            for b in bands[-level]], axis=1), axis=1)
           for level in (1, 2)}
    return {"IQR": np.log(q75 - q25), "5-95 % range": np.log(q95 - q05),
            "std": np.log(flat.std(axis=1)), "wavelet level-1 MAD": np.log(mad[1] + 1e-9),
            "wavelet level-2 MAD": np.log(mad[2] + 1e-9)}


def single_statistics(holdout, pools: int = 300, per_pool: int = 3) -> None:
    """Prints, per statistic, the median over the normal patches of `per_pool` random
    cases minus the training normals' median: mean ± std over pools, hold-out and
    training (a batch at 20 % prevalence holds about 3 normal cases of the hold-out)."""
    dataset, held = holdout.dataset, holdout.held
    values = statistic_values(holdout.predictor.unit_patches(dataset.images))
    normal, rng = dataset.labels == 0, np.random.default_rng(0)
    print(f"\n| statistic (log) | hold-out: pools of {per_pool} normal cases | training |"
          "\n|---|---|---|")
    for name, v in values.items():
        centre = np.median(v[normal & ~held])
        cells = []
        for part in (held, ~held):
            names = np.unique(dataset.cases[normal & part])
            moved = [np.median(v[normal & part & np.isin(dataset.cases, rng.choice(
                names, per_pool, replace=False))]) - centre for _ in range(pools)]
            cells.append(f"{np.mean(moved):+.3f} ± {np.std(moved):.3f}")
        print(f"| {name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
