"""Metrics: classification scores for imbalanced data, confidence intervals over seeds, and the
distances that score a generator in a feature space (FID, KID, improved precision/recall).

Everything here is a pure function of arrays; `evaluate` and `quality` call them, `report` reads
their output. Per-class quantities use NaN for a class with no test image (JSON: null).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

# Scalar classification metrics kept per seed and summarised; all are fractions in 0..1.
SCALAR_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "g_mean")
CI_METHOD = "95% Student t interval over seeds: mean +/- t(0.975, n-1) * sd / sqrt(n), clipped to 0..1 for fractions"


# ---- classification ---------------------------------------------------------------------------

def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (K, K): row = true class, column = predicted class."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """Recall TP / (TP + FN) per class from a confusion matrix; NaN for a class with no true sample."""
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def balanced_accuracy(cm: np.ndarray) -> float:
    """Mean per-class recall over classes present in y_true (= ACSA, average class-specific accuracy)."""
    return float(np.nanmean(per_class_recall(cm)))


def balanced_log_loss(y_true: np.ndarray, p_true: np.ndarray, eps: float = 1e-7) -> float:
    """Mean over the classes present of the mean -log p(true class): a class-balanced NLL.

    Unlike balanced accuracy it keeps moving when every validation image is already right, so it
    separates models that a small validation set scores as equal. p is clipped to [eps, 1].
    """
    y_true = np.asarray(y_true, np.int64)
    nll = -np.log(np.clip(np.asarray(p_true, np.float64), eps, 1.0))
    if nll.shape != y_true.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but p_true has {nll.shape}")
    return float(np.mean([nll[y_true == c].mean() for c in np.unique(y_true)])) if len(y_true) else float("nan")


def accuracy(cm: np.ndarray) -> float:
    """Fraction of correct predictions."""
    return float(np.trace(cm) / cm.sum())


def macro_f1(cm: np.ndarray) -> float:
    """Unweighted mean of F1 = 2TP / (2TP + FP + FN) over classes that occur in y_true or y_pred.

    A class that is present but never predicted correctly scores 0 (scikit-learn's convention).
    """
    tp = np.diag(cm).astype(float)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    seen = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    return float(np.mean(2 * tp[seen] / (2 * tp[seen] + fp[seen] + fn[seen])))


def g_mean(cm: np.ndarray) -> float:
    """Geometric mean of per-class recalls (classes present in y_true); 0 if any class has recall 0."""
    r = per_class_recall(cm)
    r = r[~np.isnan(r)]
    if np.any(r == 0):
        return 0.0
    return float(np.exp(np.mean(np.log(r))))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    """All scores of one run: the `SCALAR_METRICS`, `per_class_recall` (list) and `confusion` (list of lists)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    if cm.sum() == 0:
        raise ValueError("no predictions to score")
    return {
        "accuracy": accuracy(cm),
        "balanced_accuracy": balanced_accuracy(cm),
        "macro_f1": macro_f1(cm),
        "g_mean": g_mean(cm),
        "per_class_recall": per_class_recall(cm).tolist(),
        "confusion": cm.tolist(),
    }


# ---- intervals over seeds ---------------------------------------------------------------------

def _nan_to_none(x):
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def mean_ci(values: Sequence[float], confidence: float = 0.95, bounds: tuple[float, float] | None = None) -> dict:
    """{mean, ci95: [lo, hi], per_seed} with a Student t interval; one value gives [mean, mean].

    NaN values (e.g. a class absent from the test set) are dropped; all NaN gives nulls. `bounds`
    clips the interval to the metric's range (a fraction's interval stops at 0 and 1).
    """
    per_seed = [float(v) for v in values]
    v = np.array([x for x in per_seed if not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return {"mean": None, "ci95": [None, None], "per_seed": _nan_to_none(per_seed)}
    mean = float(v.mean())
    if len(v) == 1:
        lo = hi = mean
    else:
        from scipy import stats  # here: scipy.stats takes ~0.5 s to import, paid by every worker process

        half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
        lo, hi = mean - half, mean + half
        if bounds is not None:
            lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"mean": mean, "ci95": [lo, hi], "per_seed": _nan_to_none(per_seed)}


def summarize_runs(runs: list[dict]) -> dict:
    """Per-seed `classification_metrics` -> the metrics.json entry of one strategy.

    Scalars become {mean, ci95 (clipped to 0..1), per_seed}; `per_class_recall` becomes {mean: [K], ci95: [[lo, hi] x K],
    per_seed: [[K] x seeds]}; `confusion` becomes the mean count matrix over seeds.
    """
    out = {m: mean_ci([r[m] for r in runs], bounds=(0.0, 1.0)) for m in SCALAR_METRICS}
    recalls = np.array([r["per_class_recall"] for r in runs], dtype=float)  # (seeds, K)
    per_class = [mean_ci(recalls[:, k], bounds=(0.0, 1.0)) for k in range(recalls.shape[1])]
    out["per_class_recall"] = {
        "mean": [c["mean"] for c in per_class],
        "ci95": [c["ci95"] for c in per_class],
        "per_seed": _nan_to_none(recalls.tolist()),
    }
    out["confusion"] = np.mean([r["confusion"] for r in runs], axis=0).tolist()
    return out


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict:
    """a - b seed by seed (same seeds, same test set) -> {mean, ci95, per_seed} of the differences."""
    if len(a) != len(b):
        raise ValueError(f"paired difference needs as many seeds on both sides, got {len(a)} and {len(b)}")
    return mean_ci([float(x) - float(y) for x, y in zip(a, b)])


def bootstrap_balanced_difference(y_true: np.ndarray, correct_a: np.ndarray, correct_b: np.ndarray,
                                  num_classes: int, n_boot: int = 2000, seed: int = 0) -> dict:
    """Balanced accuracy of A minus B on the same images, with a class-stratified bootstrap over
    the images: the noise of a small evaluation set (a class of 4 images), which seeds do not show.

    Args:
        y_true: (N,) labels of the evaluation images.
        correct_a, correct_b: (N,) share of A's (B's) models that classify each image right (the
            mean over seeds), in [0, 1].
        num_classes: K; classes without an image are left out of the mean, as in `balanced_accuracy`.
        n_boot: bootstrap draws; seed: their numpy seed.

    Returns:
        {"mean": observed difference, "p5": its 5th bootstrap percentile, "p95": its 95th,
         "share_positive": the share of draws with A ahead}.
    """
    y_true = np.asarray(y_true)
    delta = np.asarray(correct_a, float) - np.asarray(correct_b, float)
    rng = np.random.default_rng(seed)
    present = [c for c in range(num_classes) if (y_true == c).any()]
    if not present:
        raise ValueError("no evaluation image to compare on")
    draws = np.zeros(n_boot)
    observed = 0.0
    for c in present:
        d = delta[y_true == c]
        observed += d.mean()
        # n draws with replacement from the class's images = multinomial counts over them
        counts = rng.multinomial(len(d), np.full(len(d), 1.0 / len(d)), size=n_boot)
        draws += counts @ d / len(d)
    observed, draws = observed / len(present), draws / len(present)
    return {"mean": float(observed), "p5": float(np.percentile(draws, 5)), "p95": float(np.percentile(draws, 95)),
            "share_positive": float((draws > 0).mean())}


def best_strategy(scores: dict[str, float]) -> str:
    """The name with the highest score; ties go to the first listed (deterministic)."""
    if not scores:
        raise ValueError("no strategy to choose from")
    return max(scores, key=lambda k: (scores[k], -list(scores).index(k)))


# ---- feature-space distances for generators -----------------------------------------------------

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
