import numpy as np
import pytest

from mammo_core.config import SplitConfig
from mammo_core.data import load_dataset
from mammo_core.splits import (assert_disjoint, holdout_split, leakage_groups,
                               train_val_test_split)


@pytest.fixture(scope="module")
def dataset(shared_data):
    from mammo_core.config import DataConfig
    return load_dataset(shared_data, DataConfig())


@pytest.mark.parametrize("group_by", ["case", "roi", "none"])
def test_groups_join_duplicates_in_every_mode(dataset, group_by):
    groups = leakage_groups(dataset, group_by)
    for dup in np.unique(dataset.duplicate_groups):
        members = np.flatnonzero(dataset.duplicate_groups == dup)
        assert len(set(groups[members])) == 1


def test_case_groups_contain_whole_cases(dataset):
    groups = leakage_groups(dataset, "case")
    for case in np.unique(dataset.cases):
        assert len(set(groups[dataset.cases == case])) == 1
    # duplicates link 14 pairs of cases, so there are fewer groups than cases
    assert len(np.unique(groups)) < 103


def test_split_is_disjoint_stratified_and_reproducible(dataset):
    groups = leakage_groups(dataset, "case")
    config = SplitConfig(seed=7)
    parts = train_val_test_split(dataset.labels, groups, config)
    assert sum(len(p) for p in parts.values()) == len(dataset.labels)
    for a in parts:
        for b in parts:
            if a < b:
                assert not set(dataset.cases[parts[a]]) & set(dataset.cases[parts[b]])
    assert 0.12 < len(parts["test"]) / len(dataset.labels) < 0.3
    for index in parts.values():
        assert 0.3 < dataset.labels[index].mean() < 0.65
    again = train_val_test_split(dataset.labels, groups, config)
    for name in parts:
        np.testing.assert_array_equal(parts[name], again[name])
    other = train_val_test_split(dataset.labels, groups, SplitConfig(seed=8))
    assert not np.array_equal(parts["test"], other["test"])


def test_assert_disjoint_catches_leaks():
    groups = np.array([0, 0, 1, 1])
    with pytest.raises(AssertionError, match="group 0"):
        assert_disjoint({"train": np.array([0, 2]), "test": np.array([1, 3])}, groups)


def test_holdout_needs_enough_groups():
    with pytest.raises(ValueError, match="too few"):
        holdout_split(np.array([0, 1, 0]), np.array([0, 1, 2]), 0.2, 0)
