"""The registered ensemble alone: milliseconds per `predict` call by batch size and TF threads.

    python benchmarks/predictor_bench.py                     # champion of the bench store
    python benchmarks/predictor_bench.py --model-uri models:/mammo-microcal/2 --calls 50

No HTTP, no server: what the model costs per call, the lower bound under any REST
server. TensorFlow's thread pools can be sized only once per process, so each thread
count runs in its own child process (this script with --threads).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCHES = (1, 8, 32)


def measure(model_uri: str, threads: int, calls: int) -> None:
    """Prints one markdown row: ms per predict call (and images/s) for each batch size."""
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    sys.path.insert(0, str(ROOT))
    from tune.project import load_ensemble

    predictor = load_ensemble(model_uri)
    patch = np.random.default_rng(0).integers(0, 256, (1, 60, 60), dtype=np.uint8)
    cells = []
    for batch in BATCHES:
        patches = np.repeat(patch, batch, axis=0)
        predictor.predict(patches)  # warm-up: traces the graph for this shape
        start = time.perf_counter()
        for _ in range(calls):
            predictor.predict(patches)
        ms = (time.perf_counter() - start) / calls * 1000
        cells.append(f"{ms:.1f} ms ({batch / ms * 1000:.0f} images/s)")
    print(f"| {threads} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=str(ROOT / "benchmarks/results/search.db"))
    parser.add_argument("--model-uri", default="models:/mammo-microcal@champion")
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="internal: one child's setting")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{Path(args.store).resolve()}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.threads:
        measure(args.model_uri, args.threads, args.calls)
        return
    print(f"model {args.model_uri}; {args.calls} calls per cell; ms per predict call")
    print("| TF threads | " + " | ".join(f"batch {b}" for b in BATCHES) + " |")
    print("|---" * (len(BATCHES) + 1) + "|")
    for threads in (1, 2):
        subprocess.run([sys.executable, __file__, "--model-uri", args.model_uri, "--calls",
                        str(args.calls), "--threads", str(threads)], check=True,
                       stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
