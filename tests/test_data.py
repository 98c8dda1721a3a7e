"""ImageTable checks, stratified splits and long-tail profiles."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.data import (
    DEEPSMOTE_MNIST_COUNTS,
    ImageTable,
    check_classes,
    exponential_profile,
    impose_long_tail,
    long_tail_counts,
    stratified_split,
)
from pipeline.errors import DataError


def make_table(counts, size=4, channels=1, groups=False):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)]).astype(np.int64)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (len(labels), size, size, channels), dtype=np.uint8)
    g = np.arange(len(labels)) // 3 + labels * 1000 if groups else None
    return ImageTable(images, labels, tuple(f"c{i}" for i in range(len(counts))), g)


def test_exponential_profile_hand_computed():
    # 1000 * 10^(-i/4): 1000, 562.3, 316.2, 177.8, 100
    assert exponential_profile(1000, 5, 10) == [1000, 562, 316, 177, 100]
    assert exponential_profile(500, 10, 100)[0] == 500
    assert exponential_profile(500, 10, 100)[-1] == 5
    assert exponential_profile(7, 3, 1) == [7, 7, 7]


def test_deepsmote_profile_counts():
    counts = np.full(10, 5000)
    assert long_tail_counts(counts, "deepsmote") == [4000, 2000, 1000, 750, 500, 350, 200, 100, 60, 40]
    assert DEEPSMOTE_MNIST_COUNTS[-1] == 40


def test_explicit_counts_profile_and_errors():
    assert long_tail_counts(np.array([10, 10]), "counts", explicit=[5, 2]) == [5, 2]
    with pytest.raises(DataError, match="one per class"):
        long_tail_counts(np.array([10, 10]), "counts", explicit=[5])
    with pytest.raises(DataError, match="wants 50 images of class 1"):
        long_tail_counts(np.array([10, 10]), "counts", explicit=[5, 50])
    with pytest.raises(DataError, match="10 classes"):
        long_tail_counts(np.array([10, 10]), "deepsmote")


def test_fraction_profile_keeps_the_data_s_own_imbalance():
    # round(n * f), at least one image: 210 -> 21, 2250 -> 225, 7 -> 1 (0.7), 3 -> 1 (0.3 rounds to 0)
    assert long_tail_counts(np.array([210, 2250, 7, 3]), "fraction", fraction=0.1) == [21, 225, 1, 1]
    assert long_tail_counts(np.array([210, 2250]), "fraction", fraction=1.0) == [210, 2250]
    with pytest.raises(ValueError, match="fraction"):
        long_tail_counts(np.array([10, 10]), "fraction")


def test_impose_long_tail_is_seeded_and_exact():
    t = make_table([20, 20, 20])
    a = impose_long_tail(t, [20, 5, 1], seed=3)
    b = impose_long_tail(t, [20, 5, 1], seed=3)
    c = impose_long_tail(t, [20, 5, 1], seed=4)
    assert a.counts().tolist() == [20, 5, 1]
    assert np.array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)


def test_stratified_split_keeps_proportions_and_one_train_image():
    t = make_table([100, 10, 2, 1])
    train, val = stratified_split(t, 0.2, seed=0)
    assert val.counts().tolist() == [20, 2, 1, 0]
    assert train.counts().tolist() == [80, 8, 1, 1]
    train2, _ = stratified_split(t, 0.2, seed=0)
    assert np.array_equal(train.images, train2.images)


def test_group_split_never_shares_a_group():
    t = make_table([30, 30], groups=True)
    train, val = stratified_split(t, 0.3, seed=1)
    assert len(val) > 0
    assert not set(train.groups.tolist()) & set(val.groups.tolist())


def test_table_rejects_bad_labels_and_shapes():
    with pytest.raises(DataError, match="row 1: label 5 out of range"):
        ImageTable(np.zeros((2, 4, 4, 1), np.uint8), np.array([0, 5]), ("a", "b"))
    with pytest.raises(DataError, match="2 images but labels"):
        ImageTable(np.zeros((2, 4, 4, 1), np.uint8), np.array([0]), ("a", "b"))
    with pytest.raises(DataError, match="uint8"):
        ImageTable(np.zeros((2, 4, 4, 1), np.float32), np.array([0, 1]), ("a", "b"))


def test_check_classes():
    with pytest.raises(DataError, match="'c2' have no image"):
        check_classes(make_table([3, 3, 0]), "here")
    with pytest.raises(DataError, match="at least two"):
        check_classes(make_table([3]), "here")
    check_classes(make_table([3, 1]), "here")


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 50), st.floats(1.0, 1000.0))
def test_exponential_profile_properties(n_max, k, ratio):
    counts = exponential_profile(n_max, k, ratio)
    assert len(counts) == k and counts[0] == n_max
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    assert all(c >= 1 for c in counts)
    if k > 1 and n_max / ratio >= 1:
        assert abs(counts[-1] - n_max / ratio) <= 1
