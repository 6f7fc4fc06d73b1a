"""Fitting one model: seeding, the family's recipe (batch size, epochs, early stopping), a
compact status line."""
from __future__ import annotations

import sys
import time
from typing import Sequence, TextIO

import keras
import numpy as np

from mammo_core.balance import balanced
from mammo_core.config import TrainingConfig
from mammo_core.metrics import auc
from mammo_core.recipe import Recipe


def limit_tensorflow_threads(threads: int = 1) -> None:
    """Gives TensorFlow `threads` intra- and inter-op threads (a trial owns one CPU).

    TensorFlow ignores OMP_NUM_THREADS, and refuses the setting once it has run an op in
    this process (a reused Ray worker, a test process), which then keeps what it had.
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass


def set_seed(seed: int) -> None:
    """Seeds Python, NumPy and the Keras backend so a run can be repeated."""
    keras.utils.set_random_seed(seed)


def fit(model: keras.Model, train: tuple[np.ndarray, np.ndarray],
        val: tuple[np.ndarray, np.ndarray], config: TrainingConfig, recipe: Recipe,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        stream: TextIO | None = sys.stdout) -> keras.callbacks.History:
    """Trains `model` as `recipe` says and returns its History.

    The training part (only) is balanced as `config.class_balance` says. `recipe.epochs`
    epochs of `recipe.batch_size` images, stopped by the recipe's early-stopping rule (its
    monitor, patience, and whether the best epoch's weights are restored).
    Prints one status line per epoch with an ETA (nothing when `stream` is None).
    """
    status = [EpochStatus(recipe.epochs, stream)] if stream else []
    x, y, class_weight = balanced(*train, config.class_balance, config.seed)
    n_classes = int(model.outputs[0].shape[-1])
    n_classes = 2 if n_classes == 1 else n_classes
    return model.fit(x, y, class_weight=class_weight, validation_data=val, epochs=recipe.epochs,
                     batch_size=recipe.batch_size, verbose=0,
                     callbacks=[*macro_auc(n_classes, *val), *recipe.early_stopping_callbacks(),
                                *status, *callbacks])


def predict_proba(model: keras.Model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Returns the positive-class probability per image (N,), or for a model of several
    classes each class's probability (N, K)."""
    out = model.predict(images, batch_size=batch_size, verbose=0)
    return out.ravel() if out.shape[-1] == 1 else out


def macro_auc(n_classes: int, x_val: np.ndarray, y_val: np.ndarray) -> list[keras.callbacks.Callback]:
    """Returns [MacroAUC] for a model of several classes (to put first among the
    callbacks, so early stopping and reports see `val_auc`), [] for a binary one."""
    return [MacroAUC(x_val, y_val)] if n_classes > 2 else []


class MacroAUC(keras.callbacks.Callback):
    """Adds `val_auc`, the macro one-vs-rest ROC AUC on the validation part, to each
    epoch's logs: the objective of a model of several classes."""

    def __init__(self, x_val: np.ndarray, y_val: np.ndarray):
        super().__init__()
        self.x_val, self.y_val = x_val, y_val

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if logs is not None:
            logs["val_auc"] = auc(self.y_val, predict_proba(self.model, self.x_val))


class EpochStatus(keras.callbacks.Callback):
    """Prints `epoch 3/60  loss 0.512  auc 0.801  val_auc 0.774  2.1s/epoch  ETA 2m01s`."""

    def __init__(self, epochs: int, stream: TextIO):
        super().__init__()
        self.epochs, self.stream = epochs, stream

    def on_train_begin(self, logs=None) -> None:
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        done = epoch + 1
        per_epoch = (time.monotonic() - self.started) / done
        shown = "  ".join(f"{k} {v:.3f}" for k, v in (logs or {}).items()
                          if k in ("loss", "auc", "val_loss", "val_auc"))
        print(f"epoch {done}/{self.epochs}  {shown}  {per_epoch:.1f}s/epoch  "
              f"ETA {_duration(per_epoch * (self.epochs - done))} (or earlier: early stopping)",
              file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s"
