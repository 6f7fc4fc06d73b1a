"""Training recipes: how a family is trained, as its publication trained it.

A recipe is the optimizer (Adam, RMSprop, SGD), its learning rate and decay, the batch
size, the epochs of a single fit and the early-stopping rule. Every family has one
(`PUBLISHED`); the experiment's `model.optimizer` and `training` keys override it field
by field, and a trial's hyperparameters (`learning_rate`, `optimizer`, `batch_size`)
override both, so a preset trains as published unless a config or a search says
otherwise.

Where a document is silent the choice is said beside the recipe. The project's own
families (`hypermodel`, `siamese`) keep the project's settings.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping, Optional

OPTIMIZERS = ("adam", "rmsprop", "sgd")
MONITORS = ("val_auc", "val_loss")


@dataclass(frozen=True)
class EarlyStop:
    """Stop after `patience` epochs without improvement of `monitor`; with `restore_best`,
    the weights of the best epoch are kept (Keras' EarlyStopping)."""

    monitor: str = "val_auc"
    patience: int = 12
    restore_best: bool = True


@dataclass(frozen=True)
class Recipe:
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    # Keras 2's `decay`: the step size at iteration t is learning_rate / (1 + decay * t)
    decay: float = 0.0
    beta_2: float = 0.999  # Adam's second-moment decay
    momentum: float = 0.0  # SGD
    batch_size: int = 32
    epochs: int = 60  # a single fit (`train`); a search's trials run search.max_epochs
    early_stopping: Optional[EarlyStop] = EarlyStop()

    def make_optimizer(self):
        """Returns a fresh Keras optimizer for this recipe."""
        import keras

        rate = self.learning_rate
        if self.decay > 0:
            rate = keras.optimizers.schedules.InverseTimeDecay(
                self.learning_rate, decay_steps=1, decay_rate=self.decay)
        if self.optimizer == "rmsprop":
            return keras.optimizers.RMSprop(rate)
        if self.optimizer == "sgd":
            return keras.optimizers.SGD(rate, momentum=self.momentum)
        return keras.optimizers.Adam(rate, beta_2=self.beta_2)

    def early_stopping_callbacks(self) -> list:
        """Returns [keras EarlyStopping] for the recipe's rule, or [] when it has none."""
        if self.early_stopping is None:
            return []
        import keras

        rule = self.early_stopping
        return [keras.callbacks.EarlyStopping(
            monitor=rule.monitor, mode="min" if rule.monitor.endswith("loss") else "max",
            patience=rule.patience, restore_best_weights=rule.restore_best)]

    def params(self) -> dict[str, str]:
        """Returns the recipe as MLflow params (`recipe.*`)."""
        flat = {k: v for k, v in asdict(self).items() if k != "early_stopping"}
        stop = self.early_stopping
        flat["early_stopping"] = ("none" if stop is None else
                                  f"{stop.monitor} patience {stop.patience}"
                                  + (" restore best" if stop.restore_best else ""))
        return {f"recipe.{k}": str(v) for k, v in flat.items()}


PROJECT = Recipe()  # Adam; the learning rate is a hyperparameter of the project's families
_MASS_CALC_EARLY = Recipe(optimizer="adam", learning_rate=1e-3, batch_size=32, epochs=50,
                          early_stopping=None)
_MASS_CALC_LATE = Recipe(optimizer="rmsprop", learning_rate=1e-3, decay=1e-3, batch_size=128,
                         epochs=100, early_stopping=EarlyStop("val_loss", 5, True))

PUBLISHED: dict[str, Recipe] = {
    "hypermodel": PROJECT,
    "siamese": PROJECT,
    # 000 (the schema of its hypermodel): Adam 1e-3 with beta_2 0.9999; silent on batch
    # size, epochs and stopping: the project's.
    "microcal_hypermodel": replace(PROJECT, beta_2=0.9999),
    # 001 prints the network only: Keras' Adam default 1e-3 and the project's loop.
    "microcal_cnn": PROJECT,
    # 002: M0-M2 before the changes M3 lists (RMSprop with decay, batch 128, early
    # stopping), so Keras' defaults then: Adam 1e-3, batch 32, no early stopping; epochs
    # unstated: 50. M3-M5: RMSprop(learning_rate=0.001, decay=1e-3), batch 128, early
    # stopping (its rule unstated: val_loss, patience 5, best weights kept).
    **{f"mass_calc_m{k}": _MASS_CALC_EARLY for k in range(3)},
    **{f"mass_calc_m{k}": _MASS_CALC_LATE for k in range(3, 6)},
    # 004: Adam 1e-3, batch 128, up to 100 epochs, EarlyStopping(val_loss, patience 3,
    # restore_best_weights).
    "mias_cnn": Recipe(optimizer="adam", learning_rate=1e-3, batch_size=128, epochs=100,
                       early_stopping=EarlyStop("val_loss", 3, True)),
    # 003, SCRATCH_6 (mass vs calcification): RMSprop 1e-3, 35 epochs; batch size not
    # given: Keras' 32; epochs were chosen by hand, no early stopping.
    "cbis_scratch": Recipe(optimizer="rmsprop", learning_rate=1e-3, batch_size=32, epochs=35,
                           early_stopping=None),
    # 003, SIAMESE_5: 50 epochs; optimizer not given: Adam 1e-3 as the scratch runs began.
    "siamese_cbis": Recipe(optimizer="adam", learning_rate=1e-3, batch_size=32, epochs=50,
                           early_stopping=None),
    # 003, VGG16_V5 / INCEPTION_5 (mass vs calcification): Adam 1e-3, batch 32, 15 / 20 epochs.
    "vgg16": Recipe(optimizer="adam", learning_rate=1e-3, batch_size=32, epochs=15,
                    early_stopping=None),
    "inception_v3": Recipe(optimizer="adam", learning_rate=1e-3, batch_size=32, epochs=20,
                           early_stopping=None),
}


def resolve(family: str, hp: Mapping[str, Any], optimizer: Any = None,
            training: Any = None) -> Recipe:
    """Returns the recipe `family` trains with: its published one, overridden by the
    config's `model.optimizer` (an OptimizerConfig) and `training` (a TrainingConfig)
    fields that are set, then by the trial's hyperparameters `hp`.

    Raises ValueError for a family without a recipe or an unknown searched optimizer.
    """
    if family not in PUBLISHED:
        raise ValueError(f"no training recipe for family {family!r}")
    recipe = PUBLISHED[family]
    changes: dict[str, Any] = {}
    if optimizer is not None:
        changes |= {k: v for k, v in (("optimizer", optimizer.name),
                                      ("learning_rate", optimizer.learning_rate),
                                      ("decay", optimizer.decay),
                                      ("beta_2", optimizer.beta_2),
                                      ("momentum", optimizer.momentum)) if v is not None}
    if training is not None:
        changes |= {k: getattr(training, k) for k in ("batch_size", "epochs")
                    if getattr(training, k) is not None}
        changes |= _early_stopping(recipe.early_stopping, training)
    changes |= {k: hp[k] for k in ("optimizer", "learning_rate", "batch_size") if k in hp}
    recipe = replace(recipe, **changes)
    if recipe.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {recipe.optimizer!r}")
    return replace(recipe, learning_rate=float(recipe.learning_rate),
                   batch_size=int(recipe.batch_size))


def _early_stopping(published: Optional[EarlyStop], training: Any) -> dict[str, Any]:
    """Returns the early-stopping change `training` asks for ({} when it sets none)."""
    if getattr(training, "early_stopping", None) is False:
        return {"early_stopping": None}
    patience, monitor = training.early_stopping_patience, training.monitor
    if patience is None and monitor is None:
        return {}
    base = published or EarlyStop()
    return {"early_stopping": EarlyStop(monitor or base.monitor, patience or base.patience,
                                        base.restore_best)}
