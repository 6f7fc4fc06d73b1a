"""The search, as data: Tune search space, searcher and scheduler from the experiment YAML."""
from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator

from mammo_core.config import Experiment, ParamSpace

METRIC, MODE = "val_auc", "max"  # select on AUC, never accuracy (see docs/benchmarks.md)


def param_space(experiment: Experiment, fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Returns the Tune param space of `search_space`, or the constants in `fixed`.

    Hyperparameters not searched keep their `hyperparameters` value. Every trial also gets
    `seed`, so trials differ only in their hyperparameters, and `family` (the config's,
    unless the family is searched).
    """
    space = dict(fixed) if fixed else {name: _domain(spec) for name, spec
                                       in experiment.search_space.items()}
    for name, value in experiment.hyperparameters.items():  # unsearched: the fixed point
        space.setdefault(name, value)
    space.setdefault("family", experiment.model.family)  # every trial names its family
    space["seed"] = experiment.search.seed
    return space


def make_searcher(experiment: Experiment, fold: int):
    """Returns the configured searcher (Optuna TPE, HyperOpt TPE or random), seeded per fold."""
    search = experiment.search
    seed = search.seed + fold
    if search.searcher == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # one banner per fold otherwise
        return OptunaSearch(metric=METRIC, mode=MODE, seed=seed)
    if search.searcher == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch
        return HyperOptSearch(metric=METRIC, mode=MODE, random_state_seed=seed)
    return BasicVariantGenerator(random_state=seed)


def make_scheduler(experiment: Experiment) -> ASHAScheduler:
    """Returns ASHA on validation AUC; no trial is stopped before `grace_period` epochs."""
    search = experiment.search
    return ASHAScheduler(metric=METRIC, mode=MODE, max_t=search.max_epochs,
                         grace_period=search.grace_period,
                         reduction_factor=search.reduction_factor)


def _domain(spec: ParamSpace):
    if spec.type == "choice":
        return tune.choice(list(spec.values))
    if spec.type == "grid":  # every value, in each of num_samples repeats (tune/fold.py)
        return tune.grid_search(list(spec.values))
    if spec.type == "loguniform":
        return tune.loguniform(spec.low, spec.high)
    return tune.uniform(spec.low, spec.high)
