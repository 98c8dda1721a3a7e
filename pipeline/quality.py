"""GAN quality without downloads: FID, KID, intra-FID, precision/recall and class consistency in the
feature space of a classifier trained here on real data, plus a pixel-space memorisation check.
`gan_quality(...)` returns metrics.json's `gan_quality`; real test images are weighted to the
synthetic class mix, so the scores do not just measure that the plan adds mostly rare classes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline import feature_distances as D
from pipeline import metrics as M
from pipeline.data import ImageTable
from pipeline.errors import DataError
from pipeline.pixels import to_float


@torch.no_grad()
def embed(model: nn.Module, images: np.ndarray, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(features float64 (N, D) from `model.features`, predicted labels int64 (N,)) in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    feats, preds = [], []
    for i in range(0, len(images), batch_size):
        f = model.features(to_float(images[i : i + batch_size]).to(device))
        feats.append(f.double().cpu())
        preds.append(model.head(f).argmax(1).cpu())
    return torch.cat(feats).numpy(), torch.cat(preds).numpy().astype(np.int64)


def class_mix_weights(real_labels: np.ndarray, fake_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Weights (N_real,) summing to 1 that give the real rows the fake class proportions.

    w_i = p_fake(y_i) / n_real(y_i); 0 for classes without fake images. A class with fake images
    but no real one cannot be matched and is left out (its share is spread over the others).
    """
    p_fake = np.bincount(fake_labels, minlength=num_classes) / len(fake_labels)
    n_real = np.bincount(real_labels, minlength=num_classes)
    per_class = np.where(n_real > 0, p_fake / np.maximum(n_real, 1), 0.0)
    w = per_class[real_labels]
    if w.sum() == 0:
        raise DataError("no class has both real test images and synthetic images to compare")
    return w / w.sum()


def intra_fid(real_f: np.ndarray, real_y: np.ndarray, fake_f: np.ndarray, fake_y: np.ndarray,
              class_names: tuple[str, ...]) -> dict[str, float | None]:
    """FID per class between that class's fake and real features; None with fewer than 2 of either."""
    out = {}
    for c, name in enumerate(class_names):
        r, f = real_f[real_y == c], fake_f[fake_y == c]
        out[name] = D.fid(f, r) if len(r) >= 2 and len(f) >= 2 else None
    return out


def class_consistency(pred: np.ndarray, intended: np.ndarray, class_names: tuple[str, ...]) -> dict:
    """How often the real-data classifier gives synthetic images their intended label (overall, per class)."""
    per_class = {}
    for c, name in enumerate(class_names):
        m = intended == c
        per_class[name] = float(np.mean(pred[m] == c)) if m.any() else None
    return {"overall": float(np.mean(pred == intended)), "per_class": per_class}


def _pixels(images: np.ndarray) -> np.ndarray:
    # pixels in [0, 1], scaled by 1/sqrt(D) so an L2 distance is a root-mean-square pixel difference
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return x / np.sqrt(x.shape[1])


def _subsample(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= cap else np.sort(rng.choice(n, cap, replace=False))


# synthetic images scored per class at most: a pool several times a large plan (generate.pool_factor)
# would otherwise make the k-NN radii a (pool x pool) distance matrix (MNIST-LT filled to 4,000 with a
# 4x pool: 124,000 images, 390 s on one core); about twice MNIST's largest test class (1,135), so the
# synthetic side of a class's statistics stays the larger one
MAX_SCORED_PER_CLASS = 2000


def scored_synthetic(synthetic: ImageTable, seed: int, cap: int) -> ImageTable:
    """`synthetic` itself when no class has more than `cap` images, else `cap` of each such class
    drawn without replacement (seeded by `seed` alone, rows kept in order), the others whole."""
    counts = np.bincount(synthetic.labels, minlength=1)
    if counts.max(initial=0) <= cap:
        return synthetic
    rng = np.random.default_rng([seed, cap])
    by_class = (np.flatnonzero(synthetic.labels == c) for c in range(len(counts)))
    # _subsample keeps a class of at most `cap` rows whole without drawing
    return synthetic.subset(np.sort(np.concatenate([rows[_subsample(len(rows), cap, rng)] for rows in by_class])))


def memorization(real_train: ImageTable, real_test: ImageTable, synthetic: ImageTable,
                 rng: np.random.Generator, max_samples: int = 5000, pairs: int = 8) -> dict:
    """Pixel distance of each synthetic image to its nearest training image, against the same for
    real test images (what a genuinely new image looks like).

    `ratio_median` < 1 and `fraction_below_real_p05` well above 0.05 suggest copies of training
    images; `closest_pairs` index the full synthetic and train tables.
    """
    train_x = _pixels(real_train.images)
    si = _subsample(len(synthetic), max_samples, rng)
    ti = _subsample(len(real_test), max_samples, rng)
    d_syn, j_syn = D.nearest(_pixels(synthetic.images[si]), train_x)
    d_real, _ = D.nearest(_pixels(real_test.images[ti]), train_x)
    p05 = float(np.quantile(d_real, 0.05))
    order = np.argsort(d_syn, kind="stable")[:pairs]
    return {
        "space": "pixels, root-mean-square difference in 0..1",
        "synthetic_to_train": _dist_summary(d_syn),
        "test_to_train": _dist_summary(d_real),
        "ratio_median": float(np.median(d_syn) / max(np.median(d_real), 1e-12)),
        "fraction_below_real_p05": float(np.mean(d_syn < p05)),
        "closest_pairs": [
            {"synthetic": int(si[i]), "train": int(j_syn[i]), "distance": float(d_syn[i])} for i in order
        ],
        "n_synthetic": int(len(si)),
        "n_test": int(len(ti)),
    }


def _dist_summary(d: np.ndarray) -> dict:
    return {"min": float(d.min()), "p05": float(np.quantile(d, 0.05)), "median": float(np.median(d))}


def gan_quality(
    real_train: ImageTable,
    real_test: ImageTable,
    synthetic: ImageTable,
    feature_model: nn.Module,
    seed: int,
    *,
    k: int = 3,
    kid_subsets: int = 50,
) -> dict:
    """Score synthetic images against real ones in `feature_model`'s feature space.

    Args:
        real_train: the real training images (memorisation reference, and the real-vs-real FID floor).
        real_test: real images the GAN never saw: the reference for FID, KID, precision/recall.
        synthetic: the generated images with their intended labels (at most MAX_SCORED_PER_CLASS of a
            class are scored, drawn by `scored_synthetic`; n.generated counts them all).
        feature_model: a `Classifier` trained on real data (`features` embeds, `head` judges labels).
        seed: seeds the KID subsets and the memorisation subsample.
        k: neighbours for the precision/recall manifolds (lowered when a set is tiny).
        kid_subsets: subsets averaged by KID.

    Returns:
        The metrics.json `gan_quality` dict: fid, kid, intra_fid, precision, recall,
        class_consistency (overall fractions), their per-class and reference details, memorization.
    """
    if len(synthetic) < 2 or len(real_test) < 2:
        raise DataError(f"GAN quality needs at least 2 synthetic and 2 test images, got {len(synthetic)} and {len(real_test)}")
    generated = len(synthetic)
    synthetic = scored_synthetic(synthetic, seed, MAX_SCORED_PER_CLASS)
    n_classes = len(real_test.class_names)
    rng = np.random.default_rng(seed)
    f_test, p_test = embed(feature_model, real_test.images)
    f_syn, p_syn = embed(feature_model, synthetic.images)
    f_train, _ = embed(feature_model, real_train.images)
    w_test = class_mix_weights(real_test.labels, synthetic.labels, n_classes)
    w_train = class_mix_weights(real_train.labels, synthetic.labels, n_classes)
    # KID draws its subsets from rng before the memorisation subsample does
    scores = _feature_scores(f_syn, f_test, w_test, rng, k=k, kid_subsets=kid_subsets)
    return scores | _per_class_scores(f_syn, p_syn, synthetic, f_test, real_test, k) | {
        "memorization": memorization(real_train, real_test, synthetic, rng),
        "reference": _real_reference(f_train, w_train, f_test, w_test, p_test, real_test),
        "feature_space": f"penultimate layer ({f_test.shape[1]}-d) of a class-weighted small_cnn trained on the real training split",
        "n": {"synthetic": len(synthetic), "generated": generated, "test": len(real_test), "train": len(real_train)},
    }


def _feature_scores(f_syn: np.ndarray, f_test: np.ndarray, w_test: np.ndarray, rng: np.random.Generator, *,
                    k: int, kid_subsets: int) -> dict:
    """FID, KID and precision/recall of the synthetic features against the real test ones weighted
    `w_test` (test rows of classes without synthetic images have weight 0 and are left out)."""
    keep = w_test > 0
    k_eff = max(1, min(k, len(f_syn) - 1, int(keep.sum()) - 1))
    pr = D.precision_recall(f_test[keep], f_syn, k_eff, real_weights=w_test[keep])
    kid = D.kid(f_syn, f_test, rng, subsets=kid_subsets, p_b=w_test)
    return {
        "fid": D.fid(f_syn, f_test[keep], weights_b=w_test[keep]),
        "kid": kid["mean"],
        "kid_std": kid["std"],
        "precision": pr["precision"],
        "recall": pr["recall"],
        "k": pr["k"],
    }


def class_precision_recall(f_test: np.ndarray, test_y: np.ndarray, f_syn: np.ndarray, syn_y: np.ndarray,
                           class_names: tuple[str, ...], k: int) -> dict[str, dict]:
    """{"precision": {class: ...}, "recall": {class: ...}} within each class: synthetic images of
    the class inside its real test images' k-NN manifold, and real ones inside the synthetic
    manifold (the class's diversity: a collapsed class covers few real images). k is lowered to
    what a small class allows; None where a side has fewer than 2 images."""
    out: dict[str, dict] = {"precision": {}, "recall": {}}
    for c, name in enumerate(class_names):
        real, fake = f_test[test_y == c], f_syn[syn_y == c]
        ok = len(real) >= 2 and len(fake) >= 2
        out["precision"][name] = D.coverage_fraction(fake, real, min(k, len(real) - 1)) if ok else None
        out["recall"][name] = D.coverage_fraction(real, fake, min(k, len(fake) - 1)) if ok else None
    return out


def _per_class_scores(f_syn: np.ndarray, p_syn: np.ndarray, synthetic: ImageTable, f_test: np.ndarray,
                      real_test: ImageTable, k: int) -> dict:
    """Intra-FID, class consistency and precision/recall within each class: their mean or overall
    value and the per-class details."""
    names = real_test.class_names
    intra = intra_fid(f_test, real_test.labels, f_syn, synthetic.labels, names)
    scored = [v for v in intra.values() if v is not None]
    consistency = class_consistency(p_syn, synthetic.labels, names)
    within = class_precision_recall(f_test, real_test.labels, f_syn, synthetic.labels, names, k)
    return {
        "intra_fid": float(np.mean(scored)) if scored else None,
        "intra_fid_per_class": intra,
        "class_consistency": consistency["overall"],
        "class_consistency_per_class": consistency["per_class"],
        "precision_per_class": within["precision"],
        "recall_per_class": within["recall"],
    }


def _real_reference(f_train: np.ndarray, w_train: np.ndarray, f_test: np.ndarray, w_test: np.ndarray,
                    p_test: np.ndarray, real_test: ImageTable) -> dict:
    """The same statistics for real training images against real test images: a floor for what this
    feature space and these sample sizes can reach, and the judge's own recall on real test images."""
    names = real_test.class_names
    judge = M.per_class_recall(M.confusion_matrix(real_test.labels, p_test, len(names)))
    train, test = w_train > 0, w_test > 0
    return {
        "fid_train_vs_test": D.fid(f_train[train], f_test[test], w_train[train], w_test[test]),
        "judge_balanced_accuracy_on_test": float(np.nanmean(judge)),
        "judge_recall_per_class": {n: (None if np.isnan(r) else float(r)) for n, r in zip(names, judge)},
    }
