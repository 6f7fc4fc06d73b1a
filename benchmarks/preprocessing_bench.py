"""Wavelet-filter throughput on the 797 shared patches: batched vs one image at a time.

    python benchmarks/preprocessing_bench.py [--repeats 5]

Prints a markdown table (median of the repeats) for docs/benchmarks.md. The per-image
loop is the baseline, measured in the same run on the same images.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mammo_core.config import ClaheConfig, WaveletConfig  # noqa: E402
from mammo_core.images import as_unit  # noqa: E402
from mammo_core.preprocessing import clahe, wavelet_filter  # noqa: E402
from tune.project import load_config, load_data  # noqa: E402


def images_per_second(function, images: np.ndarray, repeats: int) -> float:
    """Returns the median throughput of `function(images)` over `repeats` timed calls."""
    function(images[:8])  # warm-up: imports and caches
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(images)
        timings.append(time.perf_counter() - start)
    return len(images) / statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    experiment, _ = load_config("experiments/microcal.yaml")
    dataset, _ = load_data(experiment, "")
    images = as_unit(dataset.images)
    rows = []
    for family in ("sym3", "haar", "db5"):
        config = WaveletConfig(family=family)
        batched = images_per_second(lambda x: wavelet_filter(x, config), images, args.repeats)
        looped = images_per_second(
            lambda x: [wavelet_filter(im[None], config) for im in x], images, args.repeats)
        rows.append((f"wavelet {family}, level 3, batched", batched, batched / looped))
        rows.append((f"wavelet {family}, level 3, per image (baseline)", looped, 1.0))
    rows.append(("CLAHE (scikit-image, per image)",
                 images_per_second(lambda x: clahe(x, ClaheConfig()), images, args.repeats), None))
    print(f"\n{len(images)} images, median of {args.repeats} runs\n")
    print("| step | images/s | speed-up vs per image |\n|---|---:|---:|")
    for name, rate, speedup in rows:
        print(f"| {name} | {rate:,.0f} | {'' if speedup is None else f'{speedup:.1f}x'} |")


if __name__ == "__main__":
    main()
