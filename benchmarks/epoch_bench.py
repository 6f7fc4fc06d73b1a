"""Seconds per search epoch on one core, with the ways Keras can run an epoch faster.

    python benchmarks/epoch_bench.py [--epochs 6]

A trial owns one core (one TensorFlow thread), trains on a fold's inner-train part and
validates every epoch. This trains the config's `hyperparameters` point on 60 % of the
preprocessed shared patches, validates on 20 %, and prints the median seconds per epoch
(after a warm-up epoch) for: the search's own fit (baseline), XLA (`jit_compile=True`),
and several batches per call (`steps_per_execution`). All variants run in this process,
one after the other, so their ratios compare like with like.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mammo_core.training import limit_tensorflow_threads, set_seed  # noqa: E402

limit_tensorflow_threads(1)  # before any op runs: a trial's single core
import keras  # noqa: E402
import numpy as np  # noqa: E402

from mammo_core.families import recipe_for  # noqa: E402
from mammo_core.hypermodel import build_model  # noqa: E402
from mammo_core.preprocessing import preprocess  # noqa: E402
from tune.project import load_config, load_data  # noqa: E402

VARIANTS = {"search fit (baseline)": {}, "jit_compile=True (XLA)": {"jit_compile": True},
            "steps_per_execution=4": {"steps_per_execution": 4}}


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times = getattr(self, "times", []) + [time.perf_counter() - self.start]


def seconds_per_epoch(experiment, x, y, options: dict, epochs: int) -> float:
    """Returns the median seconds of an epoch (train + validation) after a warm-up one."""
    n_train, n_val = int(0.6 * len(x)), int(0.2 * len(x))
    set_seed(0)
    model = build_model(experiment.hyperparameters, x.shape[1:], experiment.model)
    batch_size = recipe_for(experiment.hyperparameters, experiment.model,
                            experiment.training).batch_size
    if options:
        model.compile(optimizer=model.optimizer, loss=model.loss,
                      metrics=[keras.metrics.AUC(name="auc"),
                               keras.metrics.BinaryAccuracy(name="accuracy")], **options)
    timer = EpochTimer()
    model.fit(x[:n_train], y[:n_train], validation_data=(x[n_train:n_train + n_val],
                                                         y[n_train:n_train + n_val]),
              epochs=epochs + 1, batch_size=batch_size, verbose=0,
              callbacks=[timer])
    return statistics.median(timer.times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/microcal.yaml")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    experiment, _ = load_config(args.config)
    dataset, _ = load_data(experiment, "")
    x = preprocess(dataset.images, experiment.preprocessing)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], dataset.labels[order]
    rows = {name: seconds_per_epoch(experiment, x, y, options, args.epochs)
            for name, options in VARIANTS.items()}
    base = rows["search fit (baseline)"]
    print(f"\n{int(0.6 * len(x))} training + {int(0.2 * len(x))} validation images, one "
          f"thread, median of {args.epochs} epochs after a warm-up\n")
    print("| variant | seconds/epoch | vs baseline |\n|---|---:|---:|")
    for name, seconds in rows.items():
        print(f"| {name} | {seconds:.3f} | {base / seconds:.2f}x |")


if __name__ == "__main__":
    main()
