"""Ray Tune overhead per trial: trials that train nothing, with and without MLflow mirroring.

    python benchmarks/tune_overhead_bench.py [--trials 24]

The trainable reports three 'epochs' and returns. Measured in one run: a plain Python loop
calling it (baseline), Tune with 1 CPU per trial and 2 at a time, and the same with the
TrialRuns callback writing every trial into a SQLite MLflow store, as the search does.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tune as _project  # noqa: E402,F401  (decides Ray's loopback binding before import)
import mlflow  # noqa: E402
import ray  # noqa: E402
from ray import tune  # noqa: E402

from tune.cluster import start_ray  # noqa: E402
from tune.trial_runs import TrialRuns  # noqa: E402


def nothing(config: dict) -> None:
    for epoch in range(1, 4):
        tune.report({"val_auc": 0.5 + 0.01 * config["x"], "epoch": epoch})


def timed_tuner(trials: int, callbacks: list, storage: str) -> float:
    tuner = tune.Tuner(
        tune.with_resources(nothing, {"cpu": 1}),
        param_space={"x": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=2,
                                    metric="val_auc", mode="max"),
        run_config=tune.RunConfig(storage_path=storage, verbose=0, callbacks=callbacks))
    start = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for _ in range(args.trials):
            try:
                nothing({"x": 0.5})
            except RuntimeError:  # tune.report outside a session: nothing to report to
                pass
        loop = time.perf_counter() - start
        print(start_ray())
        uri = f"sqlite:///{tmp}/mlflow.db"
        client = mlflow.MlflowClient(uri)
        experiment = client.create_experiment("overhead")
        parent = client.create_run(experiment).info.run_id
        plain = timed_tuner(args.trials, [], f"{tmp}/plain")
        mirrored = timed_tuner(args.trials, [TrialRuns(uri, experiment, parent, 0, 3)],
                               f"{tmp}/mirrored")
        ray.shutdown()
    print(f"\n{args.trials} trials, 2 at a time, 1 CPU each\n")
    print("| setup | total s | s per trial |\n|---|---:|---:|")
    for name, seconds in (("plain Python loop (baseline)", loop), ("Ray Tune", plain),
                          ("Ray Tune + MLflow trial runs (SQLite)", mirrored)):
        print(f"| {name} | {seconds:.2f} | {seconds / args.trials:.3f} |")


if __name__ == "__main__":
    main()
