"""Training throughput (images/s per epoch) of the hypermodel on this machine.

    python benchmarks/training_bench.py [--epochs 3]

Trains the `hyperparameters` point of each experiment on the 797 preprocessed shared
patches (batch size from the config), skips the first epoch (graph tracing), and prints
a markdown table for docs/benchmarks.md. Inference throughput is shown beside it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import keras

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mammo_core.families import recipe_for  # noqa: E402
from mammo_core.hypermodel import build_model  # noqa: E402
from mammo_core.preprocessing import preprocess  # noqa: E402
from mammo_core.training import set_seed  # noqa: E402
from tune.project import load_config, load_data  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times = getattr(self, "times", []) + [time.perf_counter() - self.start]


def measure(config_path: str, epochs: int) -> tuple[str, int, float, float]:
    """Returns (label, parameters, training images/s, inference images/s)."""
    experiment, _ = load_config(config_path)
    dataset, _ = load_data(experiment, "")
    x = preprocess(dataset.images, experiment.preprocessing)
    set_seed(0)
    model = build_model(experiment.hyperparameters, x.shape[1:], experiment.model)
    batch_size = recipe_for(experiment.hyperparameters, experiment.model,
                            experiment.training).batch_size
    timer = EpochTimer()
    model.fit(x, dataset.labels, epochs=epochs + 1, batch_size=batch_size,
              verbose=0, callbacks=[timer])
    train_rate = len(x) / statistics.median(timer.times[1:])
    model.predict(x[:256], verbose=0)
    start = time.perf_counter()
    model.predict(x, batch_size=256, verbose=0)
    infer_rate = len(x) / (time.perf_counter() - start)
    hp = ", ".join(f"{k}={v}" for k, v in experiment.hyperparameters.items())
    return f"{Path(config_path).name} ({hp})", model.count_params(), train_rate, infer_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    rows = [measure(c, args.epochs) for c in
            ("experiments/microcal.yaml", "experiments/microcal_quick.yaml")]
    print(f"\nmedian over {args.epochs} epochs after a warm-up epoch\n")
    print("| model | parameters | training images/s | seconds/epoch (797 images) "
          "| inference images/s |\n|---|---:|---:|---:|---:|")
    for name, params, train, infer in rows:
        print(f"| {name} | {params:,} | {train:,.0f} | {797 / train:.2f} | {infer:,.0f} |")


if __name__ == "__main__":
    main()
