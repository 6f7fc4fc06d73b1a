"""Time per explanation for each method, next to a plain prediction of the same patches.

    python benchmarks/explain_bench.py                          # champion of the bench store
    python benchmarks/explain_bench.py --model-uri models:/mammo-microcal/7 --repeats 5

Loads a registered ensemble (default: `@champion` in benchmarks/results/search.db, which
`registry_bench.py` registers) and times, on real patches, one image at a time and a
batch of 8: prediction (the baseline), Grad-CAM of the most reliable expert, Grad-CAM
of the ensemble, Deep SHAP of the ensemble and partition SHAP of the ensemble. Prints a
markdown table of median seconds per image.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'benchmarks/results/search.db'}")

import numpy as np  # noqa: E402

from mammo_core.explanations import explain, most_reliable_expert  # noqa: E402
from tune.project import load_ensemble  # noqa: E402
from tune.project import load_config, load_data  # noqa: E402


def seconds_per_image(task, n: int, repeats: int) -> float:
    """Returns the median over `repeats` runs of task() time divided by n (one warm-up first)."""
    task()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        task()
        times.append((time.perf_counter() - start) / n)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", default="models:/mammo-microcal@champion")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-evals", type=int, default=500)
    args = parser.parse_args()
    predictor = load_ensemble(args.model_uri)
    dataset, _ = load_data(load_config("experiments/microcal.yaml")[0], "")
    raw = dataset.images[np.random.default_rng(0).choice(len(dataset.images), 8, replace=False)]
    best = most_reliable_expert(predictor)
    active = int(np.sum(np.asarray(predictor.ensemble.weights) > 0))
    cases = {"predict (baseline)": lambda x: predictor.predict(x),
             f"Grad-CAM, expert {best}": lambda x: explain(predictor, x, "gradcam", expert=best),
             f"Grad-CAM, ensemble ({active} experts with weight > 0)":
                 lambda x: explain(predictor, x, "gradcam"),
             f"Deep SHAP, ensemble ({active} experts, {len(predictor.backgrounds[0])} "
             "background patches each)": lambda x: explain(predictor, x, "shap"),
             f"partition SHAP, ensemble ({args.max_evals} evaluations)":
                 lambda x: explain(predictor, x, "partition", max_evals=args.max_evals)}
    print(f"model {args.model_uri}; weights {np.round(predictor.ensemble.weights, 3).tolist()}")
    print("| method | s per image, 1 image per call | s per image, 8 per call |")
    print("|---|---:|---:|")
    for name, task in cases.items():
        one = seconds_per_image(lambda: task(raw[:1]), 1, args.repeats)
        eight = seconds_per_image(lambda: task(raw), 8, args.repeats)
        print(f"| {name} | {one:.3f} | {eight:.3f} |", flush=True)


if __name__ == "__main__":
    main()
