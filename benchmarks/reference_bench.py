"""What a registration spends on the intensity reference (`adapt`'s training statistics).

    python benchmarks/reference_bench.py [--repeats 3]

On the microcal training patches (the 80 % a smoke registration fits on), each timed
against its baseline in the same run:
- the case-set spread (60 refits of the class mixtures, one grid search each): refits
  started from the full mixtures vs from k-means, as before 2026-12-04;
- the grid search's likelihood: the expanded quadratic form vs moving every patch by every
  shift, a (G, n, F) array.
(The explanation figures' one call per method instead of one per figure is measured by
benchmarks/explain_bench.py: 8 patches per call cost 1.18 s per image, 1 per call 2.48 s.)
Prints a Markdown table of median seconds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mammo_core.adaptation as adaptation  # noqa: E402
from mammo_core.config import load_experiment  # noqa: E402
from mammo_core.data import load_dataset  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "microcal"


def timed(call, repeats: int) -> float:
    """Returns the median seconds of `call` over `repeats` runs after one warm-up."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def spread_rows(images, labels, cases, repeats: int) -> list[tuple[str, float, float]]:
    features = adaptation.patch_features(images)
    reference = adaptation.fit_reference(images, labels)
    args = (features, cases, labels, 2, 0)
    warm = timed(lambda: adaptation.case_spread(*args, reference.densities), repeats)
    cold = timed(lambda: adaptation.case_spread(*args), repeats)
    held = features[np.isin(cases, np.unique(cases)[:10])]
    shifts = np.stack(np.meshgrid(*adaptation._COARSE, indexing="ij"), -1).reshape(-1, 2)
    shifts = np.concatenate([shifts, np.zeros((len(shifts), 1))], axis=1)
    density = reference.densities[1]
    expanded = timed(lambda: density.shifted_log_density(held, shifts), repeats * 10)
    moved = timed(lambda: density.log_density(held[None] - shifts[:, None]), repeats * 10)
    return [("case-set spread (60 sets)", warm, cold),
            (f"grid likelihood, {len(shifts)} shifts x {len(held)} patches", expanded, moved)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    experiment = load_experiment(ROOT / "experiments/microcal_smoke.yaml")
    dataset = load_dataset(DATA, experiment.data)
    trained = int(0.8 * len(dataset.labels))
    rows = spread_rows(dataset.images[:trained],  # [0, 1] floats, as register reads them
                       dataset.labels[:trained], np.asarray(dataset.cases)[:trained],
                       args.repeats)
    print("| step | now (s) | before (s) | ratio |\n|---|---:|---:|---:|")
    for name, now, before in rows:
        print(f"| {name} | {now:.3f} | {before:.3f} | {before / now:.1f}x |")


if __name__ == "__main__":
    main()
