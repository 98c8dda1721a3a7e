"""GAN-quality metrics: class-mix weights, consistency, memorisation and the full `gan_quality` dict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline import quality as Q
from pipeline.data import ImageTable
from pipeline.errors import DataError
from pipeline.models.classifiers import build_classifier
from tests.conftest import tiny_arrays

NAMES = ("a", "b", "c")


def _table(counts, seed=0) -> ImageTable:
    x, y = tiny_arrays(counts, seed=seed)
    return ImageTable(x, y, NAMES)


def _model():
    return build_classifier("small_cnn", (1, 8, 8), 3, torch.Generator().manual_seed(0)).eval()


def test_class_mix_weights_by_hand():
    # fake mix: b and c half each; real has 3 b's and 1 c -> 1/6 per b row, 1/2 for the c row
    w = Q.class_mix_weights(np.array([0, 0, 1, 1, 1, 2]), np.array([1, 1, 2, 2]), 3)
    assert w == pytest.approx([0, 0, 1 / 6, 1 / 6, 1 / 6, 1 / 2])
    with pytest.raises(DataError, match="no class"):
        Q.class_mix_weights(np.array([0, 0]), np.array([1]), 3)


def test_class_consistency_by_hand():
    out = Q.class_consistency(np.array([1, 1, 0, 2]), np.array([1, 1, 1, 2]), NAMES)
    assert out["overall"] == 0.75
    assert out["per_class"] == {"a": None, "b": pytest.approx(2 / 3), "c": 1.0}


def test_intra_fid_needs_two_of_each():
    rng = np.random.default_rng(0)
    f, y = rng.normal(size=(9, 4)), np.array([0, 0, 0, 1, 1, 1, 1, 2, 2])
    out = Q.intra_fid(f, y, f[:4], y[:4], NAMES)  # fake: three a's, one b
    assert out["a"] is not None and out["b"] is None and out["c"] is None


def test_embed_shapes():
    feats, preds = Q.embed(_model(), _table((3, 2, 2)).images, batch_size=3)
    assert feats.shape == (7, 64) and feats.dtype == np.float64 and preds.shape == (7,)


def test_memorization_flags_copies_and_not_new_images():
    train, test = _table((10, 10, 10)), _table((10, 10, 10), seed=1)
    copies = train.subset(np.array([4, 15, 27]))
    out = Q.memorization(train, test, copies, np.random.default_rng(0), pairs=2)
    assert out["synthetic_to_train"]["median"] == 0.0 and out["fraction_below_real_p05"] == 1.0
    assert out["closest_pairs"][0]["distance"] == 0.0
    assert {(p["synthetic"], p["train"]) for p in out["closest_pairs"]} <= {(0, 4), (1, 15), (2, 27)}
    fresh = _table((10, 10, 10), seed=2)
    novel = Q.memorization(train, test, fresh, np.random.default_rng(0))
    assert 0.7 < novel["ratio_median"] < 1.3  # as far from train as other new real images


def test_gan_quality_of_real_test_images_against_themselves():
    train, test = _table((12, 8, 6)), _table((10, 10, 10), seed=1)
    q = Q.gan_quality(train, test, test, _model(), seed=0)
    assert q["fid"] == pytest.approx(0.0, abs=1e-6)
    assert q["precision"] == 1.0 and q["recall"] == 1.0
    assert abs(q["kid"]) < 1e-3
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in q["intra_fid_per_class"].values())
    # the judge's agreement on these images equals its accuracy on the same real images
    judge = q["reference"]["judge_recall_per_class"]
    assert q["class_consistency_per_class"] == pytest.approx(judge)
    json.dumps(q, allow_nan=False)


def test_gan_quality_tells_a_worse_generator_apart():
    train, test = _table((12, 8, 6)), _table((10, 10, 10), seed=1)
    good = _table((0, 10, 10), seed=3)
    x = good.images.astype(np.int16)
    bad = ImageTable(np.clip(255 - x, 0, 255).astype(np.uint8), good.labels, NAMES)  # inverted images
    model = _model()
    q_good = Q.gan_quality(train, test, good, model, seed=0)
    q_bad = Q.gan_quality(train, test, bad, model, seed=0)
    assert q_good["fid"] < q_bad["fid"] and q_good["kid"] < q_bad["kid"]
    assert q_good["precision"] > q_bad["precision"]
    assert q_good["intra_fid_per_class"]["a"] is None  # no synthetic image of class a
    with pytest.raises(DataError, match="at least 2"):
        Q.gan_quality(train, test, good.subset(np.array([0])), model, seed=0)


def test_per_class_recall_sees_a_collapsed_class():
    from pipeline.quality import class_precision_recall

    real = np.array([[0.0, 0], [1, 0], [0, 1], [1, 1], [10, 10], [11, 10], [10, 11], [11, 11]])
    test_y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    # class 0: the four real points themselves (full recall); class 1: three copies of one point
    fake = np.array([[0.0, 0], [1, 0], [0, 1], [1, 1], [10, 10], [10, 10], [10, 10]])
    syn_y = np.array([0, 0, 0, 0, 1, 1, 1])
    out = class_precision_recall(real, test_y, fake, syn_y, ("a", "b", "c"), k=1)
    assert out["recall"]["a"] == 1.0 and out["precision"]["a"] == 1.0
    # the collapsed class's k-NN balls have radius 0: only the real point it sits on is covered
    assert out["recall"]["b"] == pytest.approx(0.25) and out["precision"]["b"] == 1.0
    assert out["recall"]["c"] is None and out["precision"]["c"] is None  # no image of class c


def test_scored_synthetic_caps_each_class_and_is_seeded():
    t = _table((3, 7, 5))
    assert Q.scored_synthetic(t, seed=0, cap=7) is t  # no class over the cap: the table itself
    a, b = Q.scored_synthetic(t, seed=0, cap=4), Q.scored_synthetic(t, seed=0, cap=4)
    assert a.counts().tolist() == [3, 4, 4]  # a is under the cap and stays whole
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    # every kept row is a row of t, none twice
    flat = {img.tobytes() for img in t.images}
    assert all(img.tobytes() in flat for img in a.images) and len({img.tobytes() for img in a.images}) == len(a)
    c = Q.scored_synthetic(t, seed=1, cap=4)
    assert not np.array_equal(a.images, c.images)  # another seed, another draw


def test_gan_quality_scores_at_most_the_cap_per_class(monkeypatch):
    monkeypatch.setattr(Q, "MAX_SCORED_PER_CLASS", 4)
    real, test, syn = _table((6, 6, 6)), _table((5, 5, 5), seed=1), _table((0, 9, 9), seed=2)
    q = Q.gan_quality(real, test, syn, _model(), seed=0, kid_subsets=2)
    assert q["n"]["synthetic"] == 8 and q["n"]["generated"] == 18
