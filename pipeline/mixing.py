"""The mixing policy: how many synthetic images per class, which ones, and how much they count.

A `MixPolicy` turns (real train, synthetic, per-sample quality scores) into one training table
with per-image loss weights. `choose_policy` tries a grid of policies and keeps the one with the
best validation balanced accuracy, ties broken by the lower class-balanced validation NLL (a rare
class may have a handful of validation images, so many policies score 100%); it reads only train,
val and synthetic, never the test split.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.data import ImageTable, random_oversample
from pipeline.parallel import Workers, resolve_workers
from pipeline.progress import tqdm
from pipeline.classifier_recipe import Recipe, TrainingSet, inverse_frequency_weights
from pipeline.judge import fit_judge
from pipeline.threads import cpu_threads
from pipeline.training import intended_class_probability, resolve_device, train_classifier, validation_scores

log = logging.getLogger("augment")


@dataclass(frozen=True)
class MixPolicy:
    """One way to mix synthetic images into the real training set.

    Attributes:
        cap_ratio: at most floor(cap_ratio * real count) synthetic images per class; None = all.
        min_score: keep synthetic images whose quality score (a real-data judge's probability of
            the intended class) is >= min_score; 0 keeps all.
        synthetic_weight: loss weight of a synthetic image (a real image weighs 1).
        class_weight: also weight the loss by the inverse frequency of each class in the mix,
            counting a synthetic image as `synthetic_weight` of an image.
        loss: "ce" or "logit_adjusted" (its prior is the mix's, synthetic rows and weights included).
        trust: graded trust: a synthetic image weighs synthetic_weight x its judge score (an
            unscored one synthetic_weight).
        real_fill: partial fill: first duplicate each class's real images (at random, seeded) up to
            real_fill x the largest class's real count, then add the synthetic images on top; 0 = none.
    """

    cap_ratio: float | None = None
    min_score: float = 0.0
    synthetic_weight: float = 1.0
    class_weight: bool = False
    loss: str = "ce"
    trust: bool = False
    real_fill: float = 0.0

    @property
    def name(self) -> str:
        cap = "all" if self.cap_ratio is None else f"{self.cap_ratio:g}x"
        cw = "+cw" if self.class_weight else ""
        la = " +la" if self.loss == "logit_adjusted" else ""
        trust = " +trust" if self.trust else ""
        fill = f" fill={self.real_fill:g}" if self.real_fill else ""
        return f"cap={cap} score>={self.min_score:g} w={self.synthetic_weight:g}{cw}{la}{trust}{fill}"

    def recipe(self, tau: float) -> Recipe:
        """The training recipe of a classifier on this policy's mix."""
        return Recipe(loss=self.loss, tau=tau)


def select_synthetic(real_counts: np.ndarray, labels: np.ndarray, scores: np.ndarray, policy: MixPolicy) -> np.ndarray:
    """Row indices of the synthetic images `policy` keeps, best score first within each class.

    A NaN score (no judge) passes only when `min_score` is 0; ties keep the original order.
    """
    keep = []
    for c, n_real in enumerate(real_counts):
        rows = np.flatnonzero(labels == c)
        s = scores[rows]
        ok = np.isnan(s) if policy.min_score <= 0 else np.zeros(len(rows), dtype=bool)
        ok |= s >= policy.min_score
        rows, s = rows[ok], np.nan_to_num(s[ok], nan=-1.0)
        rows = rows[np.argsort(-s, kind="stable")]
        if policy.cap_ratio is not None:
            rows = rows[: int(np.floor(policy.cap_ratio * n_real))]
        keep.append(np.sort(rows))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Mix:
    """A policy applied to one synthetic set, selected once: the kept rows and the scores they
    ranked by. `table(real, synthetic, seed)` builds the training set of any seed from it (the seed
    only draws `real_fill`'s duplicates), so the search and every `gan_policy` run share one selection.

    Attributes:
        policy: the mixing policy.
        scores: (len(synthetic),) judge scores the selection ranked by (NaN = unscored).
        rows: the synthetic row indices kept (`select_synthetic`).
    """

    policy: MixPolicy
    scores: np.ndarray
    rows: np.ndarray

    @classmethod
    def select(cls, real_counts: np.ndarray, synthetic: ImageTable, scores: np.ndarray, policy: MixPolicy) -> "Mix":
        return cls(policy, scores, select_synthetic(real_counts, synthetic.labels, scores, policy))

    def table(self, real: ImageTable, synthetic: ImageTable, seed: int = 0) -> tuple[ImageTable, np.ndarray]:
        """(training table = real rows (then their duplicates, with `real_fill`) then kept synthetic
        rows, per-row loss weights); `seed` draws the duplicates."""
        policy, counts = self.policy, real.counts()
        kept = synthetic.subset(self.rows)
        if policy.real_fill > 0:
            target = int(np.floor(policy.real_fill * counts.max()))
            real = random_oversample(real, np.where(counts > 0, np.maximum(target - counts, 0), 0), seed)
        table = ImageTable(
            np.concatenate([real.images, kept.images]),
            np.concatenate([real.labels, kept.labels]),
            real.class_names,
        )
        syn_weight = np.full(len(kept), policy.synthetic_weight, np.float32)
        if policy.trust:
            syn_weight *= np.nan_to_num(self.scores[self.rows], nan=1.0).astype(np.float32)
        weight = np.concatenate([np.ones(len(real), np.float32), syn_weight]).astype(np.float32)
        if policy.class_weight:
            # effective images per class: real ones count 1, synthetic ones count synthetic_weight. The
            # class_weight strategy's own formula, so a mix without synthetic images weighs every image
            # bit for bit as that strategy does and trains the same classifier (the loss divides by
            # the batch's weight sum, so only the ratios between classes matter)
            effective = np.bincount(table.labels, weights=weight, minlength=real.num_classes)
            weight = weight * inverse_frequency_weights(effective)[table.labels].astype(np.float32)
        return table, weight

    def training_set(self, real: ImageTable, synthetic: ImageTable, seed: int, tau: float) -> TrainingSet:
        """What a classifier on this mix trains on with `seed` (the search's, `gan_policy`'s): the
        mix, its weights and the policy's recipe."""
        table, weight = self.table(real, synthetic, seed)
        return TrainingSet(table, sample_weight=weight, recipe=self.policy.recipe(tau))


def mix(real: ImageTable, synthetic: ImageTable, scores: np.ndarray, policy: MixPolicy,
        seed: int = 0) -> tuple[ImageTable, np.ndarray]:
    """`policy`'s training table and per-row loss weights in one call (`Mix.select` then `Mix.table`)."""
    return Mix.select(real.counts(), synthetic, scores, policy).table(real, synthetic, seed)


def policy_grid(cap_ratio: list, min_score: list, synthetic_weight: list, class_weight: list,
                loss: tuple = ("ce",), trust: tuple = (False,), real_fill: tuple = (0.0,)) -> list[MixPolicy]:
    """Every combination of the given knob values, in a stable order, without repeats.

    A cap of 0 keeps no synthetic image, so score and weight mean nothing there: it is tried once
    per class_weight value, as `cap=0x score>=0 w=1` (the real data alone: the policy may conclude
    that the GAN's images do not help).
    """
    grid: list[MixPolicy] = []
    for c, s, w, cw, lo, t, f in itertools.product(cap_ratio, min_score, synthetic_weight, class_weight, loss,
                                                   trust, real_fill):
        # cap 0: no synthetic image, so trust means nothing (real_fill still does: plain oversampling)
        policy = MixPolicy(0.0, 0.0, 1.0, cw, lo, False, f) if c == 0 else MixPolicy(c, s, w, cw, lo, t, f)
        if policy not in grid:
            grid.append(policy)
    return grid



def _best(rows: list[dict]) -> int:
    """Index of the best eligible row: highest validation balanced accuracy, then lowest NLL, then
    the earliest (fewer synthetic images)."""
    eligible = [i for i, r in enumerate(rows) if r.get("eligible", True)]
    return min(eligible, key=lambda i: (-rows[i]["val_balanced_accuracy"],
                                        np.nan_to_num(rows[i]["val_balanced_nll"], nan=np.inf), i))


def describe(policy: MixPolicy) -> dict:
    return {"name": policy.name, **asdict(policy)}


def _policy_unit(shared: dict, unit: tuple[Mix, int]) -> tuple[float, float]:
    """Validation (balanced accuracy, balanced NLL) of a classifier trained on `unit` = (mix, seed);
    `shared` holds "cfg" and "tables" (train, val, synthetic)."""
    cfg, tables = shared["cfg"], shared["tables"]
    chosen, seed = unit
    ts = chosen.training_set(tables["train"], tables["synthetic"], seed, cfg.tau)
    with cpu_threads(cfg.cpu_threads):
        model = train_classifier(ts, tables["val"], cfg, seed, steps_from=len(tables["train"]), progress=False)
        return validation_scores(model, tables["val"])


def _judge_scores(tables: dict[str, ImageTable], scores: np.ndarray | None, cfg,
                  judge) -> tuple[np.ndarray, str]:
    """The scores the policies rank by and where they came from: generation's, else p(intended
    class) under `judge` (default: `judge.JUDGES["evaluate"]` trained here on real train, chosen on val)."""
    if scores is not None and not np.isnan(scores).all():
        return scores, "generate.filter scores"
    if judge is None:
        judge = fit_judge("evaluate", tables["train"], tables["val"], cfg, cfg.seed)
    return intended_class_probability(judge, tables["synthetic"]), "real-data judge (evaluate)"


class _Search:
    """Scores grids of policies on a worker pool: one classifier per policy and selection seed."""

    def __init__(self, tables: dict[str, ImageTable], scores: np.ndarray, cfg, pool: Workers, progress: bool):
        self.tables, self.scores, self.cfg, self.pool, self.progress = tables, scores, cfg, pool, progress

    def score(self, grid: list[MixPolicy], stage: int) -> list[tuple[dict, Mix]]:
        """(report row, mix) per policy of `grid`, in grid order."""
        seeds, counts = self.cfg.mix.selection_seeds, self.tables["train"].counts()
        mixes = [Mix.select(counts, self.tables["synthetic"], self.scores, policy) for policy in grid]
        units = [(m, self.cfg.seed + 10_000 + k) for m in mixes for k in range(seeds)]
        scored = list(tqdm(self.pool.map(_policy_unit, units), total=len(units), desc=f"mixing policy ({stage})",
                           disable=not self.progress, leave=False))
        out = []
        for i, m in enumerate(mixes):
            vals = np.array(scored[i * seeds : (i + 1) * seeds])
            out.append(({**describe(m.policy), "synthetic_rows": int(len(m.rows)), "stage": stage,
                         "val_balanced_accuracy": float(vals[:, 0].mean()),
                         "val_balanced_nll": float(vals[:, 1].mean())}, m))
        return out

    def run(self) -> list[tuple[dict, Mix]]:
        """Every scored policy, each report row marked `eligible` (choosable)."""
        m = self.cfg.mix
        weights = list(dict.fromkeys(m.class_weight))
        if m.search != "staged" or len(weights) < 2:
            grid = policy_grid(m.cap_ratio, m.min_score, m.synthetic_weight, m.class_weight, m.loss, m.trust,
                               m.real_fill)
            return [({**r, "eligible": True}, x) for r, x in self.score(grid, 1)]
        # stage 1: class weighting on or off, decided on the real data alone (the better of the
        # `none` and `class_weight` baselines); stage 2: the synthetic grid with that setting
        first = self.score([MixPolicy(0.0, 0.0, 1.0, cw) for cw in weights], 1)
        cw = first[_best([r for r, _ in first])][1].policy.class_weight
        caps = [c for c in m.cap_ratio if c != 0]
        second = self.score(policy_grid(caps, m.min_score, m.synthetic_weight, [cw], m.loss, m.trust, m.real_fill),
                            2) if caps else []
        zero_allowed = any(c == 0 for c in m.cap_ratio)
        return [({**r, "eligible": zero_allowed}, x) for r, x in first] + [({**r, "eligible": True}, x)
                                                                          for r, x in second]


def _report(rows: list[dict], best: int, chosen: Mix, tables: dict[str, ImageTable], search: str,
            source: str) -> dict:
    """metrics.json `mix_policy`: the chosen row, the grid, and what the chosen mix adds per class."""
    train, synthetic, scores = tables["train"], tables["synthetic"], chosen.scores
    per_class = np.bincount(synthetic.labels[chosen.rows], minlength=train.num_classes)
    return {
        "chosen": rows[best], "grid": rows, "search": search,
        "selected_by": "validation balanced accuracy, ties by class-balanced validation NLL",
        "scores_from": source, "synthetic_per_class": {n: int(c) for n, c in zip(train.class_names, per_class)},
        "judge_score_mean_per_class": {
            n: (float(np.nanmean(scores[synthetic.labels == c])) if (synthetic.labels == c).any() else None)
            for c, n in enumerate(train.class_names)
        },
    }


def choose_policy(tables: dict[str, ImageTable], scores: np.ndarray | None, cfg, *, progress: bool = False,
                  pool: Workers | None = None, judge=None) -> tuple[dict, Mix]:
    """Try the policies of `cfg.mix`'s grid; keep the best by validation balanced accuracy.

    `tables` holds "train", "val" and "synthetic" (a shared `pool`'s "tables" may also hold the
    test split, for the runs that come after; it is never read here). With `mix.search: staged` and
    both class_weight values listed, class weighting is decided first on the real data alone (cap 0
    with and without it: the better of the two plain baselines), and the synthetic grid runs with
    the winner only, instead of the full product (twice the classifiers). A zero-cap row can be
    chosen only when cap_ratio lists 0 (`eligible` in the rows). Equal balanced accuracies (common:
    a rare class may have 4 validation images) are decided by the lower class-balanced validation
    NLL, which still separates models that get every validation image right; then by the earlier
    grid point (the grid lists fewer synthetic images first). The grid's classifiers run on `pool`
    (its shared "cfg" and "tables" must be these), else in `cfg.workers` processes of their own.
    Without `scores`, each image is scored by its p(intended class) under `judge` (see `_judge_scores`).

    Returns (report for metrics.json, the chosen `Mix`); `Mix.training_set` gives `gan_policy`'s
    training set for each seed.
    """
    tables = {k: tables[k] for k in ("train", "val", "synthetic")}
    scores, source = _judge_scores(tables, scores, cfg, judge)
    with contextlib.ExitStack() as stack:
        if pool is None:
            workers = resolve_workers(cfg.workers, cfg.cpu_threads, resolve_device(cfg.device))
            pool = stack.enter_context(Workers(workers, cfg.cpu_threads, {"cfg": cfg, "tables": tables}))
        scored = _Search(tables, scores, cfg, pool, progress).run()
    rows = [r for r, _ in scored]
    best = _best(rows)
    chosen = scored[best][1]
    log.info("mixing policy chosen on validation: %s (val balanced accuracy %.4f)",
             chosen.policy.name, rows[best]["val_balanced_accuracy"])
    return _report(rows, best, chosen, tables, cfg.mix.search, source), chosen
