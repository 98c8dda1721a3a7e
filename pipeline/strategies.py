"""The strategy registry: the ways to train on imbalanced data that `evaluate` compares.

`STRATEGIES[name].prepare(StrategyInputs)` gives a strategy's `TrainingSet` (the rows, loss weights,
recipe and synthetic pool one classifier trains on); the registry's names are params.yaml's
`evaluate.strategies`. Imports neither the config nor torch, so the config can validate strategy
names against this registry.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from pipeline.classifier_recipe import (
    Recipe, SyntheticUse, TrainingSet, inverse_frequency_weights, synthetic_per_epoch,
)
from pipeline.data import ImageTable, random_oversample
from pipeline.errors import DataError


class RecipeKnobs(Protocol):
    """The evaluate-section knobs the recipes read (`config.EvaluateConfig` has them)."""

    tau: float
    late_fraction: float
    mixup_alpha: float
    synthetic_share: float | None
    synthetic_candidates: int
    synthetic_ratio: float | None
    synthetic_spread: str


@dataclass(frozen=True)
class StrategyInputs:
    """What a strategy may build its training set from (never the test split).

    `mixed` is the real+synthetic set of the mixing policy chosen on validation (strategy
    `gan_policy`), or None when that strategy is not run; `cfg` carries the recipes' knobs
    (tau, late_fraction, mixup_alpha and the synthetic_* knobs).
    """

    train: ImageTable
    synthetic: ImageTable | None
    add: np.ndarray
    seed: int
    cfg: RecipeKnobs
    mixed: TrainingSet | None = None


@dataclass(frozen=True)
class Strategy:
    """A way to train on imbalanced data.

    Attributes:
        name: registry key (params.yaml `evaluate.strategies`).
        uses_synthetic: needs the GAN's images (skipped, with the reason, when there are none).
        prepare: StrategyInputs (train, synthetic or None, add (K,) images to add per class, seed,
            the recipes' knobs, the policy's mix) -> TrainingSet.
        description: one line for the report.
    """

    name: str
    uses_synthetic: bool
    prepare: Callable[[StrategyInputs], TrainingSet]
    description: str


def smote_oversample(table: ImageTable, add: np.ndarray, seed: int, k_neighbors: int = 5) -> ImageTable:
    """Append add[c] SMOTE images of class c (imbalanced-learn on raw pixels), rounded to uint8.

    A class with n images uses k = min(k_neighbors, n - 1) neighbours (SMOTE runs once per distinct
    k, generating only for those classes); a class with a single image cannot be interpolated and
    falls back to random duplication.
    """
    # imbalanced-learn pulls in scikit-learn: imported when SMOTE runs, so importing the registry stays cheap
    from imblearn.over_sampling import SMOTE

    rng = np.random.default_rng(seed)
    counts = table.counts()
    singles = np.zeros_like(add)
    by_k: dict[int, list[int]] = defaultdict(list)
    for c in np.flatnonzero(add > 0):
        if counts[c] < 2:
            singles[c] = add[c]
        else:
            by_k[min(k_neighbors, int(counts[c]) - 1)].append(int(c))
    x = table.images.reshape(len(table), -1).astype(np.float32)
    new_x, new_y = [], []
    for k, classes in sorted(by_k.items()):
        target = {c: int(counts[c] + add[c]) for c in classes}
        sm = SMOTE(sampling_strategy=target, k_neighbors=k, random_state=int(rng.integers(2**31 - 1)))
        xr, yr = sm.fit_resample(x, table.labels)
        new_x.append(xr[len(x):])  # imbalanced-learn appends the new rows after the originals
        new_y.append(yr[len(x):])
    out = random_oversample(table, singles, int(rng.integers(2**31 - 1)))
    if new_x:
        imgs = np.clip(np.rint(np.concatenate(new_x)), 0, 255).astype(np.uint8).reshape(-1, *table.image_shape)
        out = ImageTable.concat([out, ImageTable(imgs, np.concatenate(new_y).astype(np.int64), table.class_names)])
    return out


def _real_and_synthetic(train: ImageTable, synthetic: ImageTable | None) -> ImageTable:
    return train if synthetic is None or len(synthetic) == 0 else ImageTable.concat([train, synthetic])


def _policy_mix(inputs: StrategyInputs) -> TrainingSet:
    if inputs.mixed is None:
        raise DataError("strategy gan_policy needs synthetic images and a chosen mixing policy")
    return inputs.mixed


def _synthetic(synthetic: ImageTable | None) -> ImageTable:
    if synthetic is None or len(synthetic) == 0:
        raise DataError("strategy synthetic_only needs synthetic images; run `augment generate` first")
    return synthetic


def _recipe(i: StrategyInputs, **kw) -> Recipe:
    """A recipe with the config's knobs (tau, late_fraction, mixup_alpha) and `kw` on top."""
    return Recipe(**{"tau": i.cfg.tau, "late_fraction": i.cfg.late_fraction, **kw})


def synthetic_pool(synthetic: ImageTable, add: np.ndarray, phase: str, real_counts: np.ndarray,
                   knobs: RecipeKnobs) -> SyntheticUse:
    """The generated set as a pool: each epoch draws rows of each class afresh, repeating no image
    until the class's pool is used up. A class draws at most the plan's count (`add`) and, with
    `knobs.synthetic_ratio` r, at most floor(r x its real rows); in all at most
    `knobs.synthetic_share` of an epoch's rows are synthetic, spread as `knobs.synthetic_spread` says
    (`synthetic_per_epoch`: the rarest classes filled first, or every class alike); a pool that fits
    all of these joins whole every epoch. With `knobs.synthetic_candidates` > 1 an epoch's rows of a
    class are the ones the classifier finds hardest among that many times as many fresh draws
    (`SyntheticUse.candidates`). Every synthetic row weighs 1."""
    have = synthetic.counts()
    most = np.minimum(add, have)
    if knobs.synthetic_ratio is not None:
        real = np.asarray(real_counts, np.float64)
        most = np.minimum(most, np.floor(knobs.synthetic_ratio * real + 1e-9).astype(np.int64))
    per_epoch = synthetic_per_epoch(real_counts, most, knobs.synthetic_share, knobs.synthetic_spread)
    whole = (per_epoch == have).all()
    return SyntheticUse(synthetic, np.ones(len(synthetic), np.float32), None if whole else per_epoch, phase,
                        knobs.synthetic_candidates)


def _with_pool(i: StrategyInputs, phase: str, **recipe) -> TrainingSet:
    if i.synthetic is None or len(i.synthetic) == 0:
        raise DataError("this strategy needs synthetic images; run `augment generate` first")
    pool = synthetic_pool(i.synthetic, i.add, phase, i.train.counts(), i.cfg)
    return TrainingSet(i.train, recipe=_recipe(i, **recipe), synthetic=pool)


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in [
        Strategy("none", False, lambda i: TrainingSet(i.train), "real training data as it is"),
        Strategy(
            "class_weight", False,
            lambda i: TrainingSet(i.train, class_weight=inverse_frequency_weights(i.train.counts())),
            "cross-entropy weighted by inverse class frequency",
        ),
        Strategy(
            "oversample", False, lambda i: TrainingSet(random_oversample(i.train, i.add, i.seed)),
            "random duplicates of real images up to the plan",
        ),
        Strategy(
            "smote", False, lambda i: TrainingSet(smote_oversample(i.train, i.add, i.seed)),
            "SMOTE on pixels up to the plan (k lowered for tiny classes, duplicates for a single image)",
        ),
        Strategy(
            "augment", False, lambda i: TrainingSet(i.train, augment=True),
            "classic augmentation: random affine (rotation, scale, shift), no flips",
        ),
        Strategy(
            "logit_adjust", False, lambda i: TrainingSet(i.train, recipe=_recipe(i, loss="logit_adjusted")),
            "logit-adjusted cross-entropy (Menon et al. 2021): logits + tau * log(class prior) in the loss",
        ),
        Strategy(
            "drw", False, lambda i: TrainingSet(i.train, recipe=_recipe(i, class_weight="deferred")),
            "deferred re-weighting (Cao et al. 2019): plain loss, then effective-number class weights late",
        ),
        Strategy(
            "decouple", False, lambda i: TrainingSet(i.train, recipe=_recipe(i, retrain_head=True)),
            "decoupling (Kang et al. 2020): plain training, then the head alone trained on class-balanced batches",
        ),
        Strategy(
            "mixup_drw", False,
            lambda i: TrainingSet(i.train, recipe=_recipe(i, class_weight="deferred",
                                                          mixup_alpha=i.cfg.mixup_alpha)),
            "mixup all along with deferred re-weighting",
        ),
        Strategy(
            "logit_adjust+augment", False,
            lambda i: TrainingSet(i.train, recipe=_recipe(i, loss="logit_adjusted", augment=True)),
            "logit-adjusted cross-entropy with classic augmentation (random affine) of every batch",
        ),
        Strategy(
            "gan", True, lambda i: TrainingSet(_real_and_synthetic(i.train, i.synthetic)),
            "real images plus the GAN's synthetic images",
        ),
        Strategy(
            "gan+augment", True, lambda i: TrainingSet(_real_and_synthetic(i.train, i.synthetic), augment=True),
            "real plus synthetic images, with classic augmentation",
        ),
        Strategy(
            "gan_la", True, lambda i: _with_pool(i, "all", loss="logit_adjusted"),
            "real plus synthetic images drawn afresh each epoch, logit-adjusted loss with the prior "
            "of the real+synthetic mix",
        ),
        Strategy(
            "gan_la_real_prior", True, lambda i: _with_pool(i, "all", loss="logit_adjusted", prior="real"),
            "gan_la with the prior of the real rows alone: the synthetic rows fill the batches, the "
            "rare classes keep the real data's margins",
        ),
        Strategy(
            "gan_la_real_prior+augment", True,
            lambda i: _with_pool(i, "all", loss="logit_adjusted", prior="real", augment=True),
            "gan_la_real_prior with classic augmentation (random affine) of every batch, synthetic rows included",
        ),
        Strategy(
            "gan_la+augment", True, lambda i: _with_pool(i, "all", loss="logit_adjusted", augment=True),
            "gan_la with classic augmentation (random affine) of every batch, synthetic rows included",
        ),
        Strategy(
            "gan_mixup_drw", True,
            lambda i: _with_pool(i, "all", class_weight="deferred", mixup_alpha=i.cfg.mixup_alpha),
            "mixup_drw on real plus synthetic images drawn afresh each epoch (mixup pairs may mix "
            "a real and a synthetic image)",
        ),
        Strategy(
            "gan_mixup_drw_real_prior", True,
            lambda i: _with_pool(i, "all", class_weight="deferred", mixup_alpha=i.cfg.mixup_alpha, prior="real"),
            "gan_mixup_drw with the late class weights of the real rows' counts: the synthetic rows fill "
            "the batches, the rare classes keep DRW's weight",
        ),
        Strategy(
            "gan_drw", True, lambda i: _with_pool(i, "late", class_weight="deferred"),
            "deferred re-weighting with the synthetic images only in the late phase",
        ),
        Strategy(
            "gan_crt", True, lambda i: _with_pool(i, "head", retrain_head=True),
            "decoupling: plain training on real images, then the head re-trained on class-balanced "
            "real+synthetic batches",
        ),
        Strategy(
            "gan_policy", True, lambda i: _policy_mix(i),
            "real plus the synthetic images the mixing policy keeps (cap, judge score, loss weight, loss) "
            "with the policy chosen on validation",
        ),
        Strategy(
            "synthetic_only", True, lambda i: TrainingSet(_synthetic(i.synthetic)),
            "synthetic images only, tested on real (classification accuracy score, CAS)",
        ),
    ]
}
