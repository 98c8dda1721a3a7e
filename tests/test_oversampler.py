"""GanOverSampler: inside an imblearn Pipeline, same-seed determinism, counts per sampling strategy,
bad input, no stray files, sklearn's clone, and imbalanced-learn's own sampler checks.

Every GAN here is tiny (a few steps, width 4-8, 8x8 or 4x5 images), so each fit takes well under a second
once torch is imported.
"""

from __future__ import annotations

import math
import tempfile
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from imblearn.pipeline import Pipeline
from imblearn.utils.estimator_checks import estimator_checks_generator, sample_dataset_generator
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from pipeline.oversampler import GanOverSampler

TINY = dict(steps=3, batch_size=16, width=4, z_dim=8, device="cpu", precision="fp32", diffaug="")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and two threads crawl on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def digits(counts=(40, 10, 5)):
    """sklearn's bundled 8x8 digits (no download), classes 0..len(counts)-1 with these counts: flat
    float64 rows of 64 pixels on a 0..16 scale, as sklearn gives them."""
    d = load_digits()
    keep = np.concatenate([np.flatnonzero(d.target == c)[:n] for c, n in enumerate(counts)])
    return d.data[keep], d.target[keep]


def sampler(**kw) -> GanOverSampler:
    return GanOverSampler(**(dict(random_state=0, pixel_range=(0, 16)) | TINY | kw))


# ----------------------------------------------------------------------------- as a user uses it


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # lbfgs on raw pixels
def test_inside_an_imblearn_pipeline_fits_and_predicts():
    X, y = digits()
    pipe = Pipeline([("gan", sampler()), ("clf", LogisticRegression(max_iter=300))])
    pipe.fit(X, y)
    pred = pipe.predict(X)
    assert pred.shape == y.shape and set(pred) <= {0, 1, 2}
    gan = pipe.named_steps["gan"]
    assert dict(gan.sampling_strategy_) == {1: 30, 2: 35}
    assert gan.image_shape_ == (8, 8, 1)
    assert list(gan.get_feature_names_out()) == [f"x{i}" for i in range(64)]
    # the classifier was trained on the resampled data: 40 images of every class
    assert pipe.named_steps["clf"].classes_.tolist() == [0, 1, 2]
    refit = clone(pipe).fit(X, y)  # the whole pipeline clones, sampler included
    np.testing.assert_array_equal(refit.predict(X), pred)


def test_same_random_state_same_images_and_another_seed_others():
    X, y = digits()
    a = sampler(random_state=7).fit_resample(X, y)
    b = sampler(random_state=7).fit_resample(X, y)
    c = sampler(random_state=8).fit_resample(X, y)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0][len(X):], c[0][len(X):])
    # a RandomState draws the seed from itself: the same state gives the same images
    d = sampler(random_state=np.random.RandomState(3)).fit_resample(X, y)
    e = sampler(random_state=np.random.RandomState(3)).fit_resample(X, y)
    np.testing.assert_array_equal(d[0], e[0])


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("auto", {0: 40, 1: 40, 2: 40}),
        ("minority", {0: 40, 1: 10, 2: 40}),
        ("not minority", {0: 40, 1: 40, 2: 5}),
        (0.5, {0: 40, 1: 20, 2: 20}),  # multi-class too, as `augment plan` reads a ratio
        (30, {0: 40, 1: 30, 2: 30}),
        ({1: 25}, {0: 40, 1: 25, 2: 5}),
        (lambda y: {2: 12}, {0: 40, 1: 10, 2: 12}),
    ],
    ids=["auto", "minority", "not-minority", "ratio", "count", "dict", "callable"],
)
def test_resampled_counts_follow_the_sampling_strategy(strategy, expected):
    X, y = digits()
    X_res, y_res = sampler(sampling_strategy=strategy).fit_resample(X, y)
    assert dict(Counter(y_res.tolist())) == expected
    assert X_res.shape == (sum(expected.values()), 64) and X_res.dtype == X.dtype
    np.testing.assert_array_equal(X_res[: len(X)], X)  # the real rows come first, unchanged
    np.testing.assert_array_equal(y_res[: len(y)], y)
    synthetic = X_res[len(X):]
    assert synthetic.min() >= 0 and synthetic.max() <= 16  # back on X's pixel scale


def test_image_layouts_come_back_in_their_own_shape_and_dtype():
    X, y = digits()
    images = np.round(X * 255 / 16).astype(np.uint8).reshape(-1, 8, 8)
    for x in (images, images[..., None], np.repeat(images[..., None], 3, axis=-1)):
        X_res, y_res = sampler(pixel_range=(0, 255)).fit_resample(x, y)
        assert X_res.shape == (120, *x.shape[1:]) and X_res.dtype == np.uint8
        assert len(y_res) == 120
    # a flat RGB row needs its image_shape, pixels in (H, W, C) order
    rgb = np.repeat(images[..., None], 3, axis=-1)
    X_res, _ = sampler(pixel_range=(0, 255), image_shape=(8, 8, 3)).fit_resample(rgb.reshape(len(rgb), -1), y)
    assert X_res.shape == (120, 192)
    # integer pixels on another scale come back rounded, as integers in range
    X_res, _ = sampler().fit_resample(X.astype(np.int16), y)
    assert X_res.dtype == np.int16 and X_res.min() >= 0 and X_res.max() <= 16


def test_string_labels_and_pandas_come_back_as_they_went_in():
    X, y = digits()
    names = np.array(["cat", "dog", "eel"])[y]
    frame = pd.DataFrame(X, columns=[f"px{i}" for i in range(64)])
    X_res, y_res = sampler(sampling_strategy={"eel": 15}).fit_resample(frame, pd.Series(names, name="animal"))
    assert isinstance(X_res, pd.DataFrame) and list(X_res.columns) == list(frame.columns)
    assert isinstance(y_res, pd.Series) and y_res.name == "animal"
    assert Counter(y_res) == {"cat": 40, "dog": 10, "eel": 15}


def test_nothing_to_add_returns_the_input_and_trains_nothing():
    X, y = digits((10, 10))
    X_res, y_res = sampler().fit_resample(X, y)
    np.testing.assert_array_equal(X_res, X)
    np.testing.assert_array_equal(y_res, y)
    assert X_res is not X


def test_leaves_no_files_behind(tmp_path, monkeypatch):
    work, temp = tmp_path / "work", tmp_path / "temp"
    work.mkdir()
    temp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    sampler().fit_resample(*digits())
    assert list(work.iterdir()) == [] and list(temp.iterdir()) == []


def test_get_params_set_params_and_clone():
    s = sampler(gan_params={"lr_g": 1e-4})
    params = s.get_params()
    assert params["steps"] == 3 and params["gan_params"] == {"lr_g": 1e-4}
    twin = clone(s)
    assert twin is not s and twin.get_params() == params
    assert twin.set_params(steps=5, sampling_strategy="minority") is twin
    assert twin.steps == 5 and s.steps == 3
    assert not hasattr(twin, "sampling_strategy_")  # clone is unfitted
    X, y = digits()
    assert dict(sampler().fit(X, y).sampling_strategy_) == {1: 30, 2: 35}  # fit plans, trains nothing


# ----------------------------------------------------------------------------- bad input


def _flat(n_features, n=20):
    rng = np.random.default_rng(0)
    return rng.integers(0, 16, (n, n_features)).astype(float), np.array([0] * 14 + [1] * 6)


@pytest.mark.parametrize(
    ("params", "X", "match"),
    [
        ({}, _flat(20), "not a square number of pixels; pass image_shape"),
        ({"image_shape": (4, 4)}, _flat(20), r"image_shape \(4, 4\) holds 16 pixels, but X has 20 features"),
        ({"image_shape": (8, 8)}, (np.zeros((20, 4, 4), np.uint8), _flat(1)[1]), "does not match X's images"),
        ({"image_shape": (4, 0)}, _flat(16), "image_shape must be"),
        ({}, (np.zeros((20, 8, 8, 2), np.uint8), _flat(1)[1]), "1 or 3 channels, got 2"),
        ({}, (np.zeros((20, 2, 2, 2, 1), np.uint8), _flat(1)[1]), "must be images"),
        ({}, _flat(9), "image sides must be in 4..512"),
        ({"pixel_range": (0, 8)}, _flat(16), r"span 0..15, outside pixel_range \(0, 8\)"),
        ({"pixel_range": (1, 1)}, _flat(16), "pixel_range must be"),
        ({}, (_flat(16)[0], np.zeros(20)), "single class"),
        ({"sampling_strategy": {7: 30}}, _flat(16), "names class '7', which is not in the data"),
        ({"sampling_strategy": {0: 3}}, _flat(16), "below the 14 images"),
        ({"steps": 0}, _flat(16), "'steps' parameter of GanOverSampler must be"),
        ({"device": "tpu"}, _flat(16), "'device' parameter"),
        ({"arch": "nope"}, _flat(16), "arch: .*'nope' is not one of: concat, dcgan, sngan"),
        ({"gan_params": {"lr_gg": 1.0}}, _flat(16), "lr_gg"),
        ({"gan_params": {"steps": 9}}, _flat(16), "gan_params sets steps: pass it as GanOverSampler's own"),
        ({"aux_weight": 1.0, "arch": "concat"}, _flat(16), "aux_weight > 0 needs a discriminator with a class head"),
    ],
    ids=lambda v: None,
)
def test_bad_input_is_one_clear_error(params, X, match):
    x, y = X
    with pytest.raises(ValueError, match=match):
        sampler(**({"pixel_range": (0, 16)} | params)).fit_resample(x, y)


def test_nan_and_sparse_input_are_refused():
    import scipy.sparse

    x, y = _flat(16)
    x[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sampler().fit_resample(x, y)
    with pytest.raises(TypeError, match="dense data is required"):
        sampler().fit_resample(scipy.sparse.csr_matrix(_flat(16)[0]), y)


# ----------------------------------------------------------------------------- imbalanced-learn's checks

_CHECK_X, _ = sample_dataset_generator()
# the instance the checks clone: their common data is make_classification's 20 features, read here
# as 4x5 grayscale images on that data's own value scale
CHECKED = GanOverSampler(
    random_state=0, image_shape=(4, 5), **(TINY | {"steps": 2}),
    pixel_range=(math.floor(_CHECK_X.min()), math.ceil(_CHECK_X.max())),
)
# checks that cannot apply to an image sampler, and why (each is listed by the check generator;
# test_not_applicable_checks_exist keeps this list from going stale)
NOT_APPLICABLE = {
    "check_samplers_fit": "its X has 2 features; no image with sides >= 4 (what the GAN's upsampling "
                          "needs) holds 2 pixels, and fit checks the image layout as fit_resample does",
    "check_samplers_pandas_sparse": "a DataFrame of sparse columns is a scipy.sparse matrix to sklearn's "
                                    "validation; images are dense, and sparse X is refused (tested above)",
    "check_sampler_get_feature_names_out": "its X has 2 features (make_blobs), too few for an image; "
                                           "get_feature_names_out is checked in the Pipeline test",
    "check_sampler_get_feature_names_out_pandas": "its X has 2 features (make_blobs), too few for an image",
}


def _checks():
    for estimator, check in estimator_checks_generator(CHECKED, legacy=True):
        name = check.func.__name__ if hasattr(check, "func") else check.__name__
        yield pytest.param(estimator, check, id=name)


def test_not_applicable_checks_exist():
    names = {p.id for p in _checks()}
    assert set(NOT_APPLICABLE) <= names, set(NOT_APPLICABLE) - names
    assert len(names - set(NOT_APPLICABLE)) >= 10  # most of imblearn's sampler checks do run


@pytest.mark.parametrize(("estimator", "check"), list(_checks()))
def test_imblearn_estimator_checks(estimator, check, request):
    name = request.node.callspec.id
    if name in NOT_APPLICABLE:
        pytest.skip(f"{name} does not apply to image arrays: {NOT_APPLICABLE[name]}")
    check(estimator)
