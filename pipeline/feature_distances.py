"""Distances that score a generator in a feature space: FID, KID, nearest neighbours and improved
precision/recall (coverage of one set's k-NN balls by another's points).

Pure functions of (N, D) arrays; `quality` and `gan_tracking` call them. Nearest-neighbour searches
run in torch, in chunks, so a large set never needs its full distance matrix at once.
"""

from __future__ import annotations

import numpy as np
import torch


def mean_cov(x: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of x (N, D); `weights` (N,) give a weighted estimate.

    With weights normalised to sum 1, cov = sum_i w_i (x_i - mu)(x_i - mu)^T / (1 - sum_i w_i^2)
    (unbiased for reliability weights); equal weights give numpy's `cov(ddof=1)`.
    """
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {len(x)}")
    w = np.full(len(x), 1.0 / len(x)) if weights is None else np.asarray(weights, float) / np.sum(weights)
    mu = w @ x
    xc = x - mu
    cov = (xc * w[:, None]).T @ xc / (1.0 - np.sum(w**2))
    return mu, cov


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((a + a.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)) between two Gaussians.

    tr((C1 C2)^(1/2)) = tr((C1^(1/2) C2 C1^(1/2))^(1/2)): the inner matrix is symmetric PSD, so
    its square root comes from a symmetric eigendecomposition, real and stable for rank-deficient C.
    """
    s1 = _sqrtm_psd(cov1)
    inner = s1 @ cov2 @ s1
    tr_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)))
    d = float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt)
    return max(d, 0.0)


def fid(
    a: np.ndarray, b: np.ndarray, weights_a: np.ndarray | None = None, weights_b: np.ndarray | None = None
) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (N, D) and b (M, D), optionally weighted."""
    return frechet_distance(*mean_cov(a, weights_a), *mean_cov(b, weights_b))


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # the KID kernel of Binkowski et al. 2018: k(x, y) = (x.y / D + 1)^3
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kid(
    a: np.ndarray, b: np.ndarray, rng: np.random.Generator, subsets: int = 50, subset_size: int = 1000,
    p_b: np.ndarray | None = None,
) -> dict:
    """Kernel Inception Distance: unbiased MMD^2 (cubic polynomial kernel) averaged over subsets.

    Each subset draws m = min(subset_size, N, M) rows of a and b without replacement, rows of b
    with probabilities `p_b` when given. Returns {mean, std} over subsets.
    """
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples on each side, got {len(a)} and {len(b)}")
    p = None if p_b is None else np.asarray(p_b, float) / np.sum(p_b)
    if p is not None:
        m = min(m, int(np.count_nonzero(p)))
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False, p=p)]
        kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
        # unbiased: drop the diagonals of k(x, x) and k(y, y)
        mmd = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
        values.append(mmd)
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def _cdist_chunks(a: np.ndarray, b: np.ndarray, chunk: int):
    """Yield (start, distances (chunk, M) float64) over row chunks of a."""
    tb = torch.from_numpy(np.asarray(b, np.float64))
    for i in range(0, len(a), chunk):
        yield i, torch.cdist(torch.from_numpy(np.asarray(a[i : i + chunk], np.float64)), tb)


def nearest(a: np.ndarray, b: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each row of a, (distance, index) of its nearest row of b; memory O(chunk * M)."""
    dist, idx = [], []
    for _, d in _cdist_chunks(a, b, chunk):
        v, j = d.min(dim=1)
        dist.append(v)
        idx.append(j)
    return torch.cat(dist).numpy(), torch.cat(idx).numpy()


def knn_radii(x: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Distance of each row of x to its k-th nearest other row (the radius of its k-NN ball)."""
    if not 1 <= k < len(x):
        raise ValueError(f"k={k} needs 1 <= k < number of samples ({len(x)})")
    # the k+1 smallest distances of a row include the row itself (distance 0)
    return torch.cat([d.topk(k + 1, dim=1, largest=False).values[:, k] for _, d in _cdist_chunks(x, x, chunk)]).numpy()


def coverage_fraction(
    query: np.ndarray, ref: np.ndarray, k: int, weights: np.ndarray | None = None, chunk: int = 1024
) -> float:
    """Fraction of `query` rows inside at least one k-NN ball of `ref` (Kynkäänniemi et al. 2019)."""
    radii = torch.from_numpy(knn_radii(ref, k, chunk))
    inside = torch.cat([(d <= radii[None, :]).any(dim=1) for _, d in _cdist_chunks(query, ref, chunk)]).numpy()
    w = np.ones(len(query)) if weights is None else np.asarray(weights, float)
    return float(np.sum(w * inside) / np.sum(w))


def precision_recall(
    real: np.ndarray, fake: np.ndarray, k: int = 3, real_weights: np.ndarray | None = None
) -> dict:
    """Improved precision (fake inside the real manifold) and recall (real inside the fake manifold).

    `real_weights` weigh the real rows in recall (e.g. to match the fake class mix).
    """
    return {
        "precision": coverage_fraction(fake, real, k),
        "recall": coverage_fraction(real, fake, k, real_weights),
        "k": k,
    }
