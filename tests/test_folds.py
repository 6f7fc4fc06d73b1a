from types import SimpleNamespace

import numpy as np
import pytest

from mammo_core.config import CrossValidationConfig, DataConfig, SplitConfig
from mammo_core.data import load_dataset
from mammo_core.folds import FoldPlan, make_fold_plan


@pytest.fixture(scope="module")
def dataset(shared_data):
    return load_dataset(shared_data, DataConfig())


@pytest.fixture(scope="module")
def plan(dataset):
    return make_fold_plan(dataset, SplitConfig(), CrossValidationConfig())


def test_holdout_and_folds_cover_every_image_once(dataset, plan):
    tests = np.concatenate([f.test for f in plan.folds])
    assert sorted(np.concatenate([plan.holdout, tests]).tolist()) == list(range(797))
    assert 0.15 < len(plan.holdout) / 797 < 0.25
    for fold in plan.folds:
        development = np.concatenate([fold.train, fold.val])
        assert sorted(np.concatenate([development, fold.test]).tolist()) == sorted(
            set(range(797)) - set(plan.holdout.tolist()))


def test_no_case_or_duplicate_crosses_any_boundary(dataset, plan):
    held_cases = set(dataset.cases[plan.holdout])
    held_dups = set(dataset.duplicate_groups[plan.holdout])
    for fold in plan.folds:
        sides = {"train": fold.train, "val": fold.val, "test": fold.test}
        for name, index in sides.items():
            assert not held_cases & set(dataset.cases[index]), name
            assert not held_dups & set(dataset.duplicate_groups[index]), name
        assert not set(dataset.cases[fold.test]) & set(dataset.cases[fold.train])
        assert not set(dataset.cases[fold.val]) & set(dataset.cases[fold.train])


def test_folds_are_stratified(dataset, plan):
    for fold in plan.folds:
        assert 0.35 < dataset.labels[fold.test].mean() < 0.6
        assert 0.2 < len(fold.val) / (len(fold.val) + len(fold.train)) < 0.3


def test_seeded_and_reproducible(dataset, plan):
    again = make_fold_plan(dataset, SplitConfig(), CrossValidationConfig())
    np.testing.assert_array_equal(plan.folds[3].test, again.folds[3].test)
    other = make_fold_plan(dataset, SplitConfig(seed=1), CrossValidationConfig())
    assert not np.array_equal(plan.holdout, other.holdout)


def test_image_level_mode_still_joins_duplicates(dataset):
    plan = make_fold_plan(dataset, SplitConfig(group_by="none"), CrossValidationConfig())
    for fold in plan.folds:
        assert not set(dataset.duplicate_groups[fold.test]) & set(dataset.duplicate_groups[fold.train])
    # image-level folds do put crops of one case on both sides: the leak it demonstrates
    assert any(set(dataset.cases[f.test]) & set(dataset.cases[f.train]) for f in plan.folds)


def test_json_round_trip_checks_the_data(dataset, plan, tmp_path):
    text = plan.to_json(dataset.paths)
    restored = FoldPlan.from_json(text, dataset)
    for a, b in zip(plan.folds, restored.folds):
        np.testing.assert_array_equal(a.val, b.val)
    other = load_dataset(__import__("conftest").make_dataset(tmp_path), DataConfig())
    with pytest.raises(ValueError, match="fold plan was made for data"):
        FoldPlan.from_json(text, other)


def test_a_plan_with_a_one_class_part_is_refused_before_training():
    """24 mammograms of 12 women ran a whole search, then the register step stopped with
    a traceback: a cross-fitting part held one class. The plan's check says it at once."""
    from mammo_core.errors import DataError
    from mammo_core.folds import check_plan

    labels = np.array([0] * 40 + [1] * 8)  # 8 positives in 4 groups of 2
    groups = np.concatenate([np.arange(20).repeat(2), 100 + np.arange(4).repeat(2)])
    dataset = SimpleNamespace(labels=labels, cases=groups.astype(str), rois=groups.astype(str),
                              duplicate_groups=np.arange(len(labels)),
                              fingerprint=lambda: "f")
    plan = make_fold_plan(dataset, SplitConfig(), CrossValidationConfig(n_folds=2))
    with pytest.raises(DataError, match=r"would hold .* of one class .*groups of class 1.* "
                                        r"lower 'cross_validation.n_folds' or "
                                        r"'registry.cross_fit_folds'"):
        check_plan(plan, labels, cross_fit_folds=5, seed=0)


def published(**changes) -> SplitConfig:
    return SplitConfig(protocol="published", **changes)


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory):
    from collection_fixtures import write_microcal_partitions

    root, leaks = write_microcal_partitions(tmp_path_factory.mktemp("microcal") / "tarball")
    return load_dataset(root, DataConfig()), leaks


def test_the_published_partition_is_every_experts_test_set_and_nothing_trains_on_it(
        partitioned):
    from mammo_core.folds import published_leaks
    from mammo_core.splits import leakage_groups

    dataset, _ = partitioned
    plan = make_fold_plan(dataset, published(), CrossValidationConfig(n_folds=3))
    test = np.flatnonzero(dataset.partitions == "Test")
    assert plan.protocol == "published" and len(plan.folds) == 3
    groups = leakage_groups(dataset, "case")
    for fold in plan.folds:
        np.testing.assert_array_equal(fold.test, test)
        for part in (fold.train, fold.val, plan.holdout):
            assert not set(part.tolist()) & set(test.tolist())  # untouched by training
            assert set(dataset.partitions[part]) == {"Train"}
        assert not set(groups[fold.train]) & set(groups[fold.val])  # still grouped inside
        assert not set(groups[plan.holdout]) & set(groups[fold.train])
    vals = np.concatenate([f.val for f in plan.folds])  # k folds: each image validates once
    assert sorted(np.concatenate([vals, plan.holdout]).tolist()) == sorted(
        np.flatnonzero(dataset.partitions == "Train").tolist())
    assert FoldPlan.from_json(plan.to_json(dataset.paths), dataset).protocol == "published"
    grouped = make_fold_plan(dataset, SplitConfig(), CrossValidationConfig(n_folds=3))
    shared = {k: v for k, v in published_leaks(dataset, grouped).items() if "sharing" in k}
    assert set(shared.values()) == {0}  # the grouped protocol shares nothing by construction


def test_the_leak_of_the_published_partition_is_counted(partitioned):
    from mammo_core.folds import leak_line, published_leaks

    dataset, expected = partitioned
    plan = make_fold_plan(dataset, published(), CrossValidationConfig(n_folds=3))
    leaks = published_leaks(dataset, plan)
    assert leaks == {"published_test_images_sharing_case": expected["case"],
                     "published_test_images_sharing_roi": expected["roi"],
                     "published_test_images_sharing_pixels": expected["pixels"],
                     "published_test_images": int((dataset.partitions == "Test").sum())}
    assert expected["case"] == 3 and expected["pixels"] == 2  # the fixture's known overlap
    assert leak_line(leaks).startswith(f"published protocol: {leaks['published_test_images']} "
                                       f"test images; 3 share a case")


def test_a_collection_without_partitions_needs_a_published_fraction(dataset):
    from mammo_core.errors import DataError

    with pytest.raises(DataError, match=r"needs a test partition.*partitions \[.*\].*"
                                        r"published_test_fraction"):
        make_fold_plan(dataset, published(), CrossValidationConfig())
    plan = make_fold_plan(dataset, published(published_test_fraction=0.2),
                          CrossValidationConfig())
    test = plan.folds[0].test
    assert len(test) == int(np.ceil(0.2 * 797)) and all(np.array_equal(f.test, test) for f in plan.folds)
    assert abs(dataset.labels[test].mean() - dataset.labels.mean()) < 0.01  # stratified
    again = make_fold_plan(dataset, published(published_test_fraction=0.2),
                           CrossValidationConfig())
    assert again.same_parts(plan)  # seeded


def test_named_test_partitions_pick_the_test_side(partitioned):
    from mammo_core.errors import DataError

    dataset, _ = partitioned
    plan = make_fold_plan(dataset, published(test_partitions=("Train",)),
                          CrossValidationConfig(n_folds=2))
    assert set(dataset.partitions[plan.folds[0].test]) == {"Train"}  # the user's choice
    with pytest.raises(DataError, match="none of them named \\['Validation'\\]"):
        make_fold_plan(dataset, published(test_partitions=("Validation",)),
                       CrossValidationConfig())


def test_cbis_class_folders_give_their_test_folders_as_the_published_test_side(tmp_path):
    from collection_fixtures import write_cbis_folders

    from mammo_core.config import load_experiment

    data = load_experiment("experiments/cbis_folders_mass_vs_calc_quick.yaml").data
    dataset = load_dataset(write_cbis_folders(tmp_path / "cbis"), data)
    plan = make_fold_plan(dataset, published(group_by="none"), CrossValidationConfig(n_folds=2))
    folders = np.array([p.split("/")[-2] for p in dataset.paths])
    assert set(folders[plan.folds[0].test]) == {"mass_test", "calc_test"}
    assert set(folders[np.concatenate([plan.holdout, plan.folds[0].train,
                                       plan.folds[0].val])]) == {"mass_train", "calc_train"}
