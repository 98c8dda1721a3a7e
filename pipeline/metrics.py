"""Metrics: classification scores for imbalanced data and confidence intervals over seeds.

Everything here is a pure function of numpy arrays; `evaluate` and `recommend` call them, `report`
reads their output. Per-class quantities use NaN for a class with no test image (JSON: null). The
distances that score a generator in a feature space are `pipeline.feature_distances`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

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
