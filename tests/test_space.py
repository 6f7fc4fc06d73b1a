from pathlib import Path

import pytest
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.sample import Categorical, Float

from mammo_core.config import SearchConfig, load_experiment
from tune.space import make_scheduler, make_searcher, param_space

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = load_experiment(ROOT / "experiments" / "microcal.yaml")


def test_space_is_read_from_the_yaml():
    space = param_space(EXPERIMENT)
    assert isinstance(space["init"], Categorical) and space["init"].categories == [10, 20, 30]
    assert isinstance(space["learning_rate"], Float)
    assert space["learning_rate"].lower == pytest.approx(1e-4)
    assert space["seed"] == EXPERIMENT.search.seed


def test_fixed_configs_replace_the_space():
    space = param_space(EXPERIMENT, fixed={"init": 20, "rate": 0.0, "depth": 1,
                                           "learning_rate": 1e-3})
    assert space == {"init": 20, "rate": 0.0, "depth": 1, "learning_rate": 1e-3, "seed": 0,
                     "family": "hypermodel"}


def test_unsearched_hyperparameters_keep_their_fixed_value_and_the_family_is_named():
    families = load_experiment(ROOT / "experiments" / "families_quick.yaml")
    space = param_space(families)
    assert space["family"] == {"grid_search": list(families.search_space["family"].values)}
    assert {k: space[k] for k in ("init", "rate", "depth")} == {"init": 8, "rate": 0.05,
                                                                "depth": 1}
    assert isinstance(space["learning_rate"], Float)


@pytest.mark.parametrize("name, expected", [("optuna", "OptunaSearch"),
                                            ("hyperopt", "HyperOptSearch"),
                                            ("random", "BasicVariantGenerator")])
def test_every_searcher_can_be_built(name, expected):
    import dataclasses
    experiment = EXPERIMENT.replace(search=SearchConfig(searcher=name))
    assert type(make_searcher(experiment, fold=0)).__name__ == expected


def test_random_searcher_is_seeded():
    import dataclasses
    experiment = EXPERIMENT.replace(search=SearchConfig(searcher="random"))
    assert isinstance(make_searcher(experiment, 0), BasicVariantGenerator)


def test_asha_uses_the_configured_budget():
    scheduler = make_scheduler(EXPERIMENT)
    assert isinstance(scheduler, ASHAScheduler)
    assert scheduler._max_t == EXPERIMENT.search.max_epochs
    assert scheduler._reduction_factor == EXPERIMENT.search.reduction_factor
    # the first rung, where ASHA may first stop a trial, is the grace period
    assert min(scheduler._brackets[0]._rungs)[0] == EXPERIMENT.search.grace_period
    assert scheduler._metric == "val_auc" and scheduler._mode == "max"


def test_a_grid_dimension_tries_every_value_equally_often_with_the_random_searcher():
    from mammo_core.config import ConfigError, experiment_from_dict

    raw = load_experiment(ROOT / "experiments" / "families_quick.yaml").to_dict()
    assert experiment_from_dict(raw).grid_size() == 6
    for change, message in (({"trials_per_fold": 4}, "multiple of the grid's 6 points"),
                            ({"searcher": "optuna"}, "needs 'search.searcher: random'")):
        with pytest.raises(ConfigError, match=message):
            experiment_from_dict({**raw, "search": {**raw["search"], **change}})
    choice = {**raw, "search_space": {**raw["search_space"], "family": {
        "type": "choice", "values": raw["search_space"]["family"]["values"]}}}
    assert isinstance(param_space(experiment_from_dict(choice))["family"], Categorical)
