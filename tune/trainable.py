"""The Ray Tune trainable: hyperparameters in, one report per epoch out.

Runs inside a Ray worker. It never talks to MLflow: the driver mirrors every report
into the trial's MLflow run (tune/trial_runs.py), so trials on any node reach the store.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
from ray import tune

from mammo_core.balance import balanced
from mammo_core.config import Experiment
from mammo_core.families import build_model, count_params, recipe_for
from mammo_core.training import limit_tensorflow_threads, macro_auc, set_seed

WEIGHTS = "model.weights.h5"
STATE = "state.json"


def train_trial(config: dict, data: dict[str, np.ndarray], experiment: Experiment) -> None:
    """Trains one configuration on the fold's train part, reporting validation AUC per epoch.

    `config` holds the searched hyperparameters and `seed`. The train part (only) is
    balanced as `training.class_balance` says. A checkpoint (best-epoch weights) is
    reported whenever validation AUC improves; a restored trial continues from its best
    checkpoint. Every report also carries where the trial's time went (`PHASES`).
    The family's recipe gives the batch size and the early-stopping rule; the epochs are
    the search's budget (`search.max_epochs`), which ASHA may cut short.
    """
    entered = time.time()
    keras.backend.clear_session()  # a reused worker keeps no state of its previous trial
    limit_tensorflow_threads()
    set_seed(int(config["seed"]))
    n_classes = experiment.data.n_classes
    built = time.monotonic()
    model = build_model(config, data["x_train"].shape[1:], experiment.model,
                        seed=int(config["seed"]), n_classes=n_classes)
    build_seconds = time.monotonic() - built
    recipe = recipe_for(config, experiment.model, experiment.training)
    initial_epoch, best = restore(model)
    x, y, class_weight = balanced(data["x_train"], data["y_train"],
                                  experiment.training.class_balance, int(config["seed"]))
    start = {"entered_at": entered, "build_seconds": build_seconds,
             "setup_seconds": time.time() - entered}
    model.fit(x, y, class_weight=class_weight,
              validation_data=(data["x_val"], data["y_val"]),
              initial_epoch=initial_epoch, epochs=experiment.search.max_epochs,
              batch_size=recipe.batch_size, verbose=0,
              callbacks=[*macro_auc(n_classes, data["x_val"], data["y_val"]),
                         ReportToTune(best, count_params(model), start),
                         *recipe.early_stopping_callbacks()])


def restore(model: keras.Model) -> tuple[int, float]:
    """Loads the trial's checkpoint, if Tune restored one; returns (next epoch, best AUC)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return 0, -np.inf
    with checkpoint.as_directory() as folder:
        model.load_weights(Path(folder) / WEIGHTS)
        state = json.loads((Path(folder) / STATE).read_text())
    return state["epoch"], state["val_auc"]


# Where a trial's time goes, in each report (benchmarks/search_profile.py sums them):
# `train_seconds` / `val_seconds` of the epoch, `report_seconds` of the previous report
# (its checkpoint included), and the trial's start: `entered_at` (wall clock, when the
# worker began the trial), `build_seconds` (model build + compile), `setup_seconds`.
PHASES = ("train_seconds", "val_seconds", "report_seconds", "entered_at", "build_seconds",
          "setup_seconds")


class ReportToTune(keras.callbacks.Callback):
    """Reports loss / auc / val_loss / val_auc, the epoch's seconds and the model's weight
    count each epoch (families are compared on them) and the `PHASES` timings; checkpoints
    on a new best val_auc."""

    def __init__(self, best: float, n_weights: int = 0, start: dict | None = None):
        super().__init__()
        # not `self.params`: Keras sets that to the fit arguments
        self.best, self.n_weights, self.start = best, n_weights, dict(start or {})
        self.started = self.validating = time.monotonic()
        self.val_seconds = self.report_seconds = 0.0

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.started, self.val_seconds = time.monotonic(), 0.0

    def on_test_begin(self, logs=None) -> None:
        self.validating = time.monotonic()

    def on_test_end(self, logs=None) -> None:
        self.val_seconds += time.monotonic() - self.validating

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        seconds = time.monotonic() - self.started
        metrics = {k: float(v) for k, v in (logs or {}).items()}
        metrics.update(self.start, epoch=epoch + 1, seconds=seconds, n_weights=self.n_weights,
                       train_seconds=seconds - self.val_seconds, val_seconds=self.val_seconds,
                       report_seconds=self.report_seconds)
        reporting = time.monotonic()
        if not np.isfinite(metrics.get("val_auc", np.nan)) or metrics["val_auc"] <= self.best:
            tune.report(metrics)
        else:
            self.best = metrics["val_auc"]
            self.checkpoint(metrics, epoch)
        self.report_seconds = time.monotonic() - reporting

    def checkpoint(self, metrics: dict, epoch: int) -> None:
        with tempfile.TemporaryDirectory() as folder:
            self.model.save_weights(Path(folder) / WEIGHTS)
            (Path(folder) / STATE).write_text(json.dumps({"epoch": epoch + 1,
                                                          "val_auc": self.best}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
