"""plan_quota against hand-computed quotas and against imbalanced-learn's own resolution (which it calls)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from imblearn.utils import check_sampling_strategy

from pipeline.plan import plan_quota

COUNTS = {"a": 100, "b": 40, "c": 10, "d": 40}


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("auto", {"a": 0, "b": 60, "c": 90, "d": 60}),
        ("not majority", {"a": 0, "b": 60, "c": 90, "d": 60}),
        ("minority", {"a": 0, "b": 0, "c": 90, "d": 0}),
        ("not minority", {"a": 0, "b": 60, "c": 0, "d": 60}),
        ("all", {"a": 0, "b": 60, "c": 90, "d": 60}),
        (0.5, {"a": 0, "b": 10, "c": 40, "d": 10}),
        (1.0, {"a": 0, "b": 60, "c": 90, "d": 60}),
        (50, {"a": 0, "b": 10, "c": 40, "d": 10}),
        ({"c": 25}, {"a": 0, "b": 0, "c": 15, "d": 0}),
        ({"c": 10, "b": 41}, {"a": 0, "b": 1, "c": 0, "d": 0}),
    ],
)
def test_hand_computed(strategy, expected):
    assert plan_quota(COUNTS, strategy) == expected


def test_every_class_listed_in_order():
    assert list(plan_quota(COUNTS, "minority")) == ["a", "b", "c", "d"]


def test_int_keys_in_mapping_are_class_names():
    assert plan_quota({"0": 5, "1": 2}, {1: 4}) == {"0": 0, "1": 2}


@pytest.mark.parametrize(
    "strategy, fragment",
    [
        ("majority", "is not one of"),
        ({"zz": 5}, "'zz'"),
        ({"c": 5}, "below the 10 images"),
        ({"c": -1}, ">= 0"),
        (0.2, "class 'b' already has 40"),
        (1.5, "(0, 1]"),
        (0.0, "(0, 1]"),
        (0, ">= 1"),
        (True, "not a valid strategy"),
        ([1, 2], "unsupported type"),
    ],
)
def test_bad_strategies_raise(strategy, fragment):
    with pytest.raises(ValueError, match=None) as e:
        plan_quota(COUNTS, strategy)
    assert fragment in str(e.value)


@pytest.mark.parametrize(
    "counts, fragment",
    [({}, "need at least two classes"), ({"a": 5}, "need at least two classes"),
     ({"a": 5, "b": 0}, "every class needs at least one image")],
)
def test_counts_without_two_classes_of_images_raise(counts, fragment):
    with pytest.raises(ValueError, match=fragment):
        plan_quota(counts, "auto")


def test_ties_go_to_the_class_listed_first():
    # imbalanced-learn sees class positions, so its ties (lowest label) follow our order
    assert plan_quota({"b": 5, "a": 5, "c": 1}, "not majority") == {"b": 0, "a": 0, "c": 4}
    assert plan_quota({"b": 1, "a": 5, "c": 1}, "minority") == {"b": 4, "a": 0, "c": 0}
    assert plan_quota({"b": 5, "a": 5, "c": 1}, 1.0) == {"b": 0, "a": 0, "c": 4}


def test_the_resolution_is_imbalanced_learns(monkeypatch):
    import imblearn.utils

    seen = []  # plan_quota imports it when called, so the spy goes where it imports from
    monkeypatch.setattr(imblearn.utils, "check_sampling_strategy", lambda *a: seen.append(a) or check_sampling_strategy(*a))
    assert plan_quota(COUNTS, "auto") == {"a": 0, "b": 60, "c": 90, "d": 60}
    form, y, kind = seen[0]
    assert (form, kind, np.bincount(y).tolist()) == ("auto", "over-sampling", [100, 40, 10, 40])


def _imblearn(counts: dict[str, int], strategy) -> dict[str, int]:
    y = np.concatenate([np.full(n, c) for c, n in counts.items()])
    resolved = check_sampling_strategy(strategy, y, "over-sampling")
    return {c: int(resolved.get(c, 0)) for c in counts}


counts_st = st.dictionaries(
    st.sampled_from(list("abcdefgh")), st.integers(1, 500), min_size=2, max_size=8
)


@settings(max_examples=60, deadline=None)
@given(counts=counts_st, strategy=st.sampled_from(["auto", "not majority", "not minority", "all"]))
def test_string_forms_match_imblearn(counts, strategy):
    # imbalanced-learn breaks ties between equal counts by sorted label; we by the given order
    counts = dict(sorted(counts.items()))
    assert plan_quota(counts, strategy) == _imblearn(counts, strategy)


@settings(max_examples=60, deadline=None)
@given(counts=counts_st, extra=st.lists(st.integers(0, 300), min_size=8, max_size=8))
def test_mapping_form_matches_imblearn(counts, extra):
    wanted = {c: n + e for (c, n), e in zip(counts.items(), extra)}
    assert plan_quota(counts, wanted) == _imblearn(counts, wanted)


@settings(max_examples=60, deadline=None)
@given(counts=counts_st, target=st.integers(1, 1000))
def test_target_count_fills_every_class_to_target(counts, target):
    quota = plan_quota(counts, target)
    for c, n in counts.items():
        assert n + quota[c] == max(n, target)
