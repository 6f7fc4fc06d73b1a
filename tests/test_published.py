"""experiments/published/: one config per experiment the source documents report, each
with the document's network, recipe and split, and a quick twin that runs on fixtures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from collection_fixtures import write_cbis_arrays, write_cbis_folders, write_mias

from mammo_core.config import load_experiment
from mammo_core.data import load_dataset
from mammo_core.families import build_model, count_params
from mammo_core.folds import check_plan, make_fold_plan

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = sorted(p.stem for p in (ROOT / "experiments" / "published").glob("*.yaml")
                   if not p.stem.endswith("_quick"))
# the printed weight counts a config must build (backbones: without their ImageNet file)
PRINTED = {"microcal_001": 568_449, "mias_normal_vs_abnormal": 117_505,
           "cbis_scratch_mass_vs_calc": 3_452_545, "cbis_scratch_benign_vs_malignant": 3_452_545,
           "cbis_siamese_mass_vs_calc": 3_977_345, "cbis_vgg16_mass_vs_calc": 18_910_023,
           "cbis_vgg16_benign_vs_malignant": 18_910_023,
           "cbis_inception_mass_vs_calc": 31_240_999,
           "cbis_inception_benign_vs_malignant": 16_705_191}


def config(name: str):
    return load_experiment(ROOT / "experiments" / "published" / f"{name}.yaml")


def test_every_document_has_its_experiments_and_each_a_quick_twin():
    assert len(PUBLISHED) == 16 and set(PRINTED) <= set(PUBLISHED)
    for name in PUBLISHED:
        full, quick = config(name), config(f"{name}_quick")
        assert quick.model.family == full.model.family
        assert quick.split.protocol == full.split.protocol
        assert quick.tracking.registered_model_name == full.tracking.registered_model_name


@pytest.mark.parametrize("name", sorted(PRINTED))
def test_a_published_config_builds_the_network_its_document_prints(name):
    experiment = config(name)
    model_config = experiment.model.replace(
        backbone=experiment.model.backbone.replace(weights=None))
    shape = (*experiment.data.image_size, 1)
    shape = (2, *shape) if experiment.data.pairs else shape
    assert count_params(build_model(experiment.hyperparameters, shape, model_config)) \
        == PRINTED[name]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory, shared_data) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("published")
    return {"cbis_npy": write_cbis_arrays(root / "npy"),
            "folders": write_cbis_folders(root / "folders"),
            "mias": write_mias(root / "mias", women=16), "microcal": shared_data}


def fixture_of(experiment) -> str:
    if experiment.data.layout == "folders":
        return "microcal" if experiment.data.collection == "microcal" else "folders"
    return {"cbis_npy": "cbis_npy", "mias": "mias"}[experiment.data.layout]


@pytest.mark.parametrize("name", PUBLISHED)
def test_a_quick_twins_split_is_its_documents_on_the_fixture(name, fixtures):
    """The quick twin's fold plan on its collection's fixture: the published test side
    untouched by training and hold-out, and every part holding both classes."""
    experiment = config(f"{name}_quick")
    dataset = load_dataset(fixtures[fixture_of(experiment)], experiment.data)
    plan = make_fold_plan(dataset, experiment.split, experiment.cross_validation)
    check_plan(plan, dataset.labels, experiment.registry.cross_fit_folds,
               experiment.split.seed)
    if experiment.split.protocol == "published":
        test = plan.folds[0].test
        assert all(np.array_equal(f.test, test) for f in plan.folds)
        trained = np.concatenate([plan.holdout, *[np.r_[f.train, f.val] for f in plan.folds]])
        assert not set(test.tolist()) & set(trained.tolist())
    else:
        assert experiment.split.group_by == "none"  # 000: image-level K-fold
