"""Splits are a pure function of subject_id: disjoint, stable under cohort growth, near the fractions."""

import numpy as np
import pytest

from ehrscale.core.errors import EhrscaleError
from ehrscale.extract.splits import assign_splits


def test_split_is_a_function_of_subject_id_alone():
    small = np.arange(10_000_000, 10_001_000)
    large = np.concatenate([np.arange(10_000_000, 10_050_000), np.arange(20_000_000, 20_001_000)])
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(large)
    by_id = dict(zip(shuffled.tolist(), assign_splits(shuffled)))
    assert [by_id[s] for s in small.tolist()] == list(assign_splits(small))


def test_fractions_are_respected():
    splits = assign_splits(np.arange(100_000), {"train": 0.7, "tuning": 0.2, "held_out": 0.1})
    values, counts = np.unique(splits, return_counts=True)
    share = dict(zip(values, counts / len(splits)))
    assert share["train"] == pytest.approx(0.7, abs=0.01)
    assert share["tuning"] == pytest.approx(0.2, abs=0.01)
    assert share["held_out"] == pytest.approx(0.1, abs=0.01)


def test_salt_changes_assignment_and_zero_fraction_is_empty():
    ids = np.arange(5000)
    assert (assign_splits(ids, salt="a") != assign_splits(ids, salt="b")).any()
    assert "tuning" not in set(assign_splits(ids, {"train": 0.9, "tuning": 0.0, "held_out": 0.1}))


def test_bad_fractions():
    with pytest.raises(EhrscaleError, match="sum to 1"):
        assign_splits([1, 2], {"train": 0.5, "tuning": 0.1, "held_out": 0.1})
    with pytest.raises(EhrscaleError, match="exactly the keys"):
        assign_splits([1, 2], {"train": 1.0})
