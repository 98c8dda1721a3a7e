"""Feature-space distances (pipeline.feature_distances) against closed forms, scipy and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from pipeline import feature_distances as D


def test_frechet_distance_closed_form():
    # diagonal covariances commute: sqrt(C1 C2) = diag(2, 2); ||mu||^2 = 5, tr = 5 + 5 - 8
    d = D.frechet_distance(np.zeros(2), np.diag([1.0, 4.0]), np.array([1.0, 2.0]), np.diag([4.0, 1.0]))
    assert d == pytest.approx(7.0)


def test_frechet_distance_matches_scipy_sqrtm_for_general_covariances():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    c1, c2 = a @ a.T + np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
    assert D.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(ref, rel=1e-6)


def test_fid_identical_sets_is_zero_and_shifted_gaussians_match_closed_form():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8))
    assert D.fid(x, x) == pytest.approx(0.0, abs=1e-6)
    # N(0, I) vs N(mu, I): FID = ||mu||^2 = 4 * 0.5^2 + 4 * 1^2 = 5
    shift = np.array([0.5] * 4 + [1.0] * 4)
    a, b = rng.normal(size=(20000, 8)), rng.normal(size=(20000, 8)) + shift
    assert D.fid(a, b) == pytest.approx(5.0, abs=0.1)


def test_weighted_mean_cov():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 3))
    mu, cov = D.mean_cov(x, np.ones(50))
    assert np.allclose(mu, x.mean(0)) and np.allclose(cov, np.cov(x, rowvar=False))
    w = np.r_[np.ones(30), np.zeros(20)]
    mu, cov = D.mean_cov(x, w)  # zero weight = row left out
    assert np.allclose(mu, x[:30].mean(0)) and np.allclose(cov, np.cov(x[:30], rowvar=False))
    with pytest.raises(ValueError, match="at least 2"):
        D.mean_cov(x[:1])


def test_kid_is_the_unbiased_mmd_by_hand():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(6, 2)) + 1
    k = lambda a, b: (a @ b / 2 + 1) ** 3  # noqa: E731
    m = 6
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    out = D.kid(x, y, np.random.default_rng(0), subsets=1, subset_size=6)
    assert out["mean"] == pytest.approx(xx + yy - 2 * xy)


def test_kid_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    same = D.kid(a, b, np.random.default_rng(0), subsets=10, subset_size=200)
    shifted = D.kid(a, b + 1.0, np.random.default_rng(0), subsets=10, subset_size=200)
    assert abs(same["mean"]) < 0.05 < shifted["mean"]


def test_knn_radii_nearest_and_precision_recall_in_one_dimension():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    assert D.knn_radii(real, 1).tolist() == [1.0, 1.0, 1.0, 1.0]
    assert D.knn_radii(real, 2).tolist() == [2.0, 1.0, 1.0, 2.0]
    d, j = D.nearest(np.array([[0.4], [2.9]]), real)
    assert d == pytest.approx([0.4, 0.1]) and j.tolist() == [0, 3]
    fake = np.array([[0.5], [10.0]])
    pr = D.precision_recall(real, fake, k=1)
    # fake 0.5 lies in the ball of real 0 (radius 1), fake 10 in none; each fake ball has radius 9.5
    assert pr["precision"] == 0.5 and pr["recall"] == 1.0
    assert D.precision_recall(real, real, k=1)["precision"] == 1.0
    far = D.precision_recall(real, real + 100, k=1)
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    with pytest.raises(ValueError, match="k=4"):
        D.knn_radii(real, 4)


def test_chunked_distances_equal_unchunked():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(37, 4)), rng.normal(size=(23, 4))
    d1, j1 = D.nearest(a, b, chunk=5)
    d2, j2 = D.nearest(a, b, chunk=1000)
    assert np.allclose(d1, d2) and (j1 == j2).all()
    assert D.coverage_fraction(a, b, 3, chunk=4) == D.coverage_fraction(a, b, 3)
