"""Property tests (hypothesis) that complement the example tests in test_plan.py, test_data.py and
test_shards.py: the ratio form of `plan_quota` against imbalanced-learn and the plan's invariants
for every form; long-tail subsampling and splits on random tables; Parquet and shard-folder round
trips of random images, labels and class names; class-name sanitising.
"""

from __future__ import annotations

import shutil
import tempfile
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from imblearn.utils import check_sampling_strategy

from pipeline import layout, loaders, release, tables
from pipeline.data import ImageTable, impose_long_tail, long_tail_counts, stratified_split
from pipeline.errors import DataError
from pipeline.plan import STRING_STRATEGIES, plan_quota
from pipeline.sources import check_class_names

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILES = settings(max_examples=25, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

counts_st = st.dictionaries(st.sampled_from(list("abcdefgh")), st.integers(1, 400), min_size=2, max_size=8)


def _imblearn(counts: dict[str, int], strategy) -> dict[str, int]:
    y = np.concatenate([np.full(n, c) for c, n in counts.items()])
    resolved = check_sampling_strategy(strategy, y, "over-sampling")
    return {c: int(resolved.get(c, 0)) for c in counts}


# ---- plan_quota ------------------------------------------------------------------------------------

@FAST
@given(counts=counts_st, ratio=st.floats(0.01, 1.0))
def test_ratio_form_is_the_mapping_form_with_every_other_class_at_ratio_times_the_majority(counts, ratio):
    counts = dict(sorted(counts.items()))  # imbalanced-learn breaks ties by sorted label
    n_max = max(counts.values())
    majority = next(c for c, n in counts.items() if n == n_max)
    target = int(ratio * n_max)
    if any(n > target for c, n in counts.items() if c != majority):
        with pytest.raises(ValueError, match="over-sampling never removes images"):
            plan_quota(counts, ratio)
        return
    quota = plan_quota(counts, ratio)
    assert quota == _imblearn(counts, {c: target for c in counts if c != majority})
    if len(counts) == 2 and all(quota[c] > 0 for c in counts if c != majority):
        # imbalanced-learn's own float form takes binary targets only, and refuses to add none
        assert quota == _imblearn(counts, ratio)


strategy_st = st.one_of(
    st.sampled_from(STRING_STRATEGIES),
    st.integers(1, 600),
    st.floats(0.01, 1.0),
    st.dictionaries(st.sampled_from(list("abcdefgh")), st.integers(0, 800), max_size=4),
)


@FAST
@given(counts=counts_st, strategy=strategy_st)
def test_every_plan_lists_every_class_in_order_and_never_removes(counts, strategy):
    try:
        quota = plan_quota(counts, strategy)
    except ValueError:
        return  # refused (impossible ratio or target, unknown class): checked elsewhere
    assert list(quota) == list(counts)
    assert all(isinstance(n, int) and n >= 0 for n in quota.values())
    ceiling = max([*counts.values(), *(strategy.values() if isinstance(strategy, dict) else [])],
                  default=0)
    if isinstance(strategy, int) and not isinstance(strategy, bool):
        ceiling = max(ceiling, strategy)
    assert all(counts[c] + quota[c] <= ceiling for c in counts)  # nobody is filled past the target
    assert plan_quota(counts, strategy) == quota  # a pure function


@FAST
@given(counts=counts_st, name=st.text(min_size=1, max_size=6), n=st.integers(0, 50))
def test_a_mapping_naming_an_unknown_class_is_refused(counts, name, n):
    assume(name not in counts)
    with pytest.raises(ValueError, match="not in the data"):
        plan_quota(counts, {name: n})


# ---- long-tail profiles and splits on random tables ----------------------------------------------------

def table_of(counts: list[int], size: int = 3, seed: int = 0, groups: bool = False) -> ImageTable:
    """Every image unique (its row number in the pixels), so subsets can be traced back."""
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)]).astype(np.int64)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (len(labels), size, size, 1), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(len(labels)) % 256
    images[:, 0, 1, 0] = np.arange(len(labels)) // 256
    # groups (e.g. GTSRB tracks) never span classes
    g = labels * 1000 + rng.integers(0, max(1, len(labels) // 3), len(labels)) if groups else None
    return ImageTable(images, labels, tuple(f"c{i}" for i in range(len(counts))), g)


def row_ids(t: ImageTable) -> np.ndarray:
    return t.images[:, 0, 0, 0].astype(np.int64) + 256 * t.images[:, 0, 1, 0].astype(np.int64)


@FAST
@given(counts=st.lists(st.integers(1, 60), min_size=2, max_size=8), ratio=st.floats(1.0, 200.0),
       seed=st.integers(0, 2**32 - 1))
def test_exponential_long_tail_keeps_exact_counts_of_original_rows_in_order(counts, ratio, seed):
    t = table_of(counts)
    target = long_tail_counts(t.counts(), "exponential", ratio)
    assert all(1 <= n <= have for n, have in zip(target, t.counts()))
    out = impose_long_tail(t, target, seed)
    assert out.counts().tolist() == target
    ids = row_ids(out)
    assert np.all(np.diff(ids) > 0)  # original order, no row twice
    np.testing.assert_array_equal(out.labels, t.labels[ids])  # each row keeps its own label
    again = impose_long_tail(t, target, seed)
    np.testing.assert_array_equal(again.images, out.images)  # seeded: the same rows every time


@FAST
@given(counts=st.lists(st.integers(1, 40), min_size=2, max_size=6), data=st.data())
def test_explicit_counts_profile_is_exact_or_refused(counts, data):
    t = table_of(counts)
    wanted = data.draw(st.lists(st.integers(1, 50), min_size=len(counts), max_size=len(counts)))
    if any(w > n for w, n in zip(wanted, counts)):
        with pytest.raises(DataError, match="lower data.long_tail.counts"):
            long_tail_counts(t.counts(), "counts", explicit=wanted)
        return
    out = impose_long_tail(t, long_tail_counts(t.counts(), "counts", explicit=wanted), 0)
    assert out.counts().tolist() == wanted


@FAST
@given(counts=st.lists(st.integers(1, 40), min_size=2, max_size=6), fraction=st.floats(0.0, 0.9),
       seed=st.integers(0, 1000), groups=st.booleans())
def test_split_is_a_partition_that_leaves_every_class_in_train(counts, fraction, seed, groups):
    t = table_of(counts, groups=groups)
    train, val = stratified_split(t, fraction, seed)
    ids_train, ids_val = row_ids(train), row_ids(val)
    assert not set(ids_train) & set(ids_val)
    assert sorted([*ids_train, *ids_val]) == list(range(len(t)))
    assert (train.counts() >= 1).all()
    if groups:  # a group is wholly on one side
        assert not set(train.groups.tolist()) & set(val.groups.tolist())


# ---- Parquet and the synthetic folder -----------------------------------------------------------------

names_st = st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12)
                    .filter(lambda s: s.strip()), min_size=1, max_size=5, unique=True)


@st.composite
def image_tables(draw) -> ImageTable:
    names = draw(names_st)
    n = draw(st.integers(0, 20))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    c = draw(st.sampled_from([1, 3]))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    labels = rng.integers(0, len(names), n).astype(np.int64)
    return ImageTable(images, labels, tuple(names))


@pytest.fixture
def scratch():
    """A fresh folder per hypothesis example (function-scoped fixtures are shared between examples)."""
    made = []

    def make() -> Path:
        made.append(Path(tempfile.mkdtemp(prefix="augment-prop-")))
        return made[-1]

    yield make
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


@FILES
@given(t=image_tables())
def test_parquet_round_trip_keeps_pixels_labels_and_names(scratch, t):
    path = scratch() / "t.parquet"
    info = tables.write_parquet(path, t)
    assert info["rows"] == len(t)
    back = tables.read_parquet(path, class_names=list(t.class_names))
    np.testing.assert_array_equal(back.labels, t.labels)
    assert back.class_names == t.class_names
    if len(t):
        np.testing.assert_array_equal(back.images, t.images)


@FILES
@given(t=image_tables(), shard_size=st.integers(1, 25), export=st.booleans())
def test_shard_folder_round_trip_any_shard_size(scratch, t, shard_size, export):
    folder = scratch() / "syn"
    seeds, scores = np.arange(len(t), dtype=np.int64), np.full(len(t), np.nan, np.float32)
    manifest = release.write_shards(folder, t, release.synthetic_columns("ab" * 32, seeds, scores), shard_size, {},
                                    export_images=export)
    assert len(manifest["files"]) == max(1, -(-len(t) // shard_size))
    assert sum(f["rows"] for f in manifest["files"]) == manifest["rows"] == len(t)
    assert manifest["counts"] == {n: int(k) for n, k in zip(t.class_names, t.counts())}
    arrow = loaders.load_arrow(folder, verify=True)
    assert arrow.column("seed").to_pylist() == seeds.tolist()
    if len(t):
        back = loaders.load_table(folder, verify=True)
        np.testing.assert_array_equal(back.images, t.images)
        np.testing.assert_array_equal(back.labels, t.labels)
    if export:
        pngs = [p for p in (folder / "images").rglob("*.png")] if len(t) else []
        assert len(pngs) == len(t)
        assert all(p.resolve().is_relative_to((folder / "images").resolve()) for p in pngs)


# ---- class names and the folders made of them -----------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_safe_dir_name_is_stable_nfc_and_bounded(name):
    safe = layout.safe_dir_name(name)
    assert layout.safe_dir_name(safe) == safe  # already safe names are kept as they are
    assert unicodedata.is_normalized("NFC", safe)
    assert 0 < len(safe.encode("utf-8")) <= layout.MAX_NAME_BYTES + 1
    assert not any(ord(ch) < 32 or ord(ch) == 0x7F for ch in safe)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=12), min_size=1, max_size=6))
def test_class_names_are_accepted_exactly_when_unique_non_empty_and_printable(names):
    ok = (len(set(names)) == len(names) and all(n.strip() for n in names)
          and not any(ord(ch) < 32 for n in names for ch in n))
    if ok:
        assert check_class_names(names, "classes.json") == tuple(names)
    else:
        with pytest.raises(DataError, match="classes.json: "):
            check_class_names(names, "classes.json")
