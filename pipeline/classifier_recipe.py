"""How a downstream classifier is trained, as plain data: a `Recipe` (loss, class weights from the
start or deferred, batch sampling, mixup, head re-training), a `SyntheticUse` (how a synthetic pool
joins the real rows) and the class-weight and prior formulas they use. Imports neither torch nor the
config, so the strategy registry (`pipeline.strategies`) can build recipes without either;
`pipeline.training.train_classifier` carries out a `TrainingSet` (rows, weights, recipe, pool).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipeline.data import ImageTable


@dataclass(frozen=True)
class Recipe:
    """How one classifier is trained.

    Attributes:
        loss: "ce", or "logit_adjusted": cross-entropy on z + tau * log(prior) (Menon et al. 2021;
            tau = 1 is balanced softmax), prior = the class shares of the loss weight the batches
            carry (synthetic rows and loss weights included); predictions use z alone.
        tau: logit-adjustment strength.
        class_weight: "none"; "inverse": inverse-frequency weights all along; "deferred": DRW
            (Cao et al. 2019): plain loss, then effective-number weights (1 - b) / (1 - b^n_c) in
            the late phase.
        sampling: "instance" (each row equally likely) or "class_balanced" (each class equally
            likely, then a row of it).
        mixup_alpha: > 0: mixup with lambda ~ Beta(alpha, alpha) (not in a head re-training phase).
        retrain_head: decoupling (Kang et al. 2020): in the late phase the body is frozen and the
            head trained on class-balanced batches (from its first-phase weights, see
            `_Run._start_head_phase`).
        late_fraction: share of the epochs in the late phase (DRW, cRT, late synthetic rows).
        drw_beta: the effective-number beta of DRW.
        augment: random affine of every training batch (`augment_batch`).
        prior: the class counts the re-balancing reads, for the logit adjustment's prior and the
            class weights ("inverse", "deferred"): "batches" (what the epoch's rows carry,
            synthetic rows included) or "real" (the real rows' alone, as if the synthetic rows
            added no information about the rare classes' margins).
    """

    loss: Literal["ce", "logit_adjusted"] = "ce"
    tau: float = 1.0
    class_weight: Literal["none", "inverse", "deferred"] = "none"
    sampling: Literal["instance", "class_balanced"] = "instance"
    mixup_alpha: float = 0.0
    retrain_head: bool = False
    late_fraction: float = 0.25
    drw_beta: float = 0.9999
    augment: bool = False
    prior: Literal["batches", "real"] = "batches"

    @property
    def has_late_phase(self) -> bool:
        return self.retrain_head or self.class_weight == "deferred"


@dataclass(frozen=True)
class SyntheticUse:
    """A synthetic pool and how it joins the real rows.

    Attributes:
        pool: the synthetic images (labels in the real set's classes).
        weight: (len(pool),) loss weight of each synthetic row (a real row weighs 1).
        per_epoch: (K,) rows of each class drawn afresh every epoch, cycling through the class's
            pool so no row repeats before the pool is used up; None: every pool row every epoch.
        phase: "all" (every epoch), "late" (the late phase only: DRW-style), "head" (only while the
            head is re-trained).
        candidates: with per_epoch, > 1 draws this many times per_epoch[c] fresh rows of class c
            (at most its pool) and keeps the per_epoch[c] that the classifier, as it is at the
            epoch's start, gives the lowest probability of their class (hard examples, M2m-style
            feedback); 1 = the fresh draws as they come.
    """

    pool: ImageTable
    weight: np.ndarray
    per_epoch: np.ndarray | None = None
    phase: Literal["all", "late", "head"] = "all"
    candidates: int = 1


@dataclass(frozen=True)
class TrainingSet:
    """What one classifier trains on (a strategy's, a mix's, a judge's): real rows (as they are,
    duplicated or interpolated), per-row and per-class loss weights, the recipe and an optional
    synthetic pool; `augment` is the same as `recipe.augment`."""

    table: ImageTable
    class_weight: np.ndarray | None = None
    augment: bool = False
    sample_weight: np.ndarray | None = None
    recipe: Recipe | None = None
    synthetic: SyntheticUse | None = None


def inverse_frequency_weights(counts: np.ndarray) -> np.ndarray:
    """w_c = N / (K * n_c) (scikit-learn's "balanced"); 0 for a class without images."""
    counts = np.asarray(counts, float)
    with np.errstate(divide="ignore"):
        w = counts.sum() / (np.count_nonzero(counts) * counts)
    return np.where(counts > 0, w, 0.0)


def effective_number_weights(counts: np.ndarray, beta: float) -> np.ndarray:
    """Cao et al.'s DRW weights (1 - beta) / (1 - beta^n_c), scaled to sum to the number of present
    classes; 0 for a class without images. Counts may be fractional (weighted rows)."""
    counts = np.asarray(counts, float)
    present = counts > 0
    w = np.zeros_like(counts)
    w[present] = (1.0 - beta) / (1.0 - np.power(beta, counts[present]))
    return w * present.sum() / w.sum() if w.sum() > 0 else w


def logit_prior(class_mass: np.ndarray) -> np.ndarray:
    """log(pi_c), pi = class_mass / sum: the logit adjustment's offsets; a class with no mass gets
    the smallest present offset (it never appears in a batch, so its value only shifts its logit)."""
    mass = np.asarray(class_mass, float)
    pi = mass / mass.sum()
    out = np.full(len(mass), np.log(pi[mass > 0]).min())
    out[mass > 0] = np.log(pi[mass > 0])
    return out


# how the pool strategies spread an epoch's synthetic rows over the classes (`synthetic_per_epoch`)
SPREADS = ("rarest_first", "even")


def synthetic_per_epoch(real_counts: np.ndarray, available: np.ndarray, share: float | None,
                        spread: str = "rarest_first") -> np.ndarray:
    """Synthetic rows of each class to draw per epoch so that at most `share` of an epoch's rows are
    synthetic, given the most each class may have (`available`: the plan's count, or fewer where the
    pool is short).

    The budget, floor(share / (1 - share) * real rows), is water-filled from the rarest class up: each
    class is raised towards a common level L (real + synthetic = L) without passing its `available`,
    so a class's synthetic share falls as its real count rises and a class at or above L gets none.
    The budget's last rows (fewer than the classes still rising) go one each to the classes lowest
    after the fill, rarest first. When `available` fits the budget, or `share` is None, it is
    returned as it is.

    `spread="even"` fills the synthetic counts themselves to a common level instead (every class
    the same number, up to its `available`), so that being generated says nothing about a row's
    class: a classifier cannot learn "looks generated, so it is a rare class".

    >>> synthetic_per_epoch(np.array([100, 10, 2]), np.array([0, 90, 98]), 0.25).tolist()
    [0, 14, 23]
    >>> synthetic_per_epoch(np.array([100, 10, 2]), np.array([50, 90, 98]), 0.25, "even").tolist()
    [12, 12, 13]
    """
    n = np.asarray(real_counts, np.int64)
    cap = np.maximum(np.asarray(available, np.int64), 0)
    if spread not in SPREADS:
        raise ValueError(f"the synthetic spread must be one of {', '.join(SPREADS)}, got {spread!r}")
    if share is None:
        return cap
    if not 0.0 < share < 1.0:
        raise ValueError(f"the synthetic share must be in (0, 1), got {share}")
    budget = int(np.floor(share / (1.0 - share) * n.sum() + 1e-9))
    if cap.sum() <= budget:
        return cap
    base = np.zeros_like(n) if spread == "even" else n  # what each class is raised from

    def fill(level: int) -> np.ndarray:
        return np.clip(level - base, 0, cap)

    lo, hi = 0, int((base + cap).max())  # fill(lo).sum() <= budget < fill(hi).sum()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fill(mid).sum() <= budget else (lo, mid)
    out = fill(lo)
    rest = budget - int(out.sum())
    rising = [c for c in np.lexsort((n, base + out)) if out[c] < cap[c]]
    for c in rising[:rest]:
        out[c] += 1
    return out
