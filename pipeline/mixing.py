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
from dataclasses import asdict, dataclass, fields

import numpy as np

from pipeline.data import ImageTable, random_oversample
from pipeline.parallel import Workers, resolve_workers
from pipeline.progress import tqdm
from pipeline.classifier_recipe import Recipe, inverse_frequency_weights
from pipeline.judge import fit_judge
from pipeline.training import (
    cpu_threads, intended_class_probability, resolve_device, train_classifier, validation_scores,
)

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


def mix(real: ImageTable, synthetic: ImageTable, scores: np.ndarray, policy: MixPolicy,
        seed: int = 0) -> tuple[ImageTable, np.ndarray]:
    """(training table = real rows (then their duplicates, with `real_fill`) then kept synthetic
    rows, per-row loss weights); `seed` draws the duplicates."""
    counts = real.counts()
    rows = select_synthetic(counts, synthetic.labels, scores, policy)
    kept = synthetic.subset(rows)
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
        syn_weight *= np.nan_to_num(scores[rows], nan=1.0).astype(np.float32)
    weight = np.concatenate([np.ones(len(real), np.float32), syn_weight]).astype(np.float32)
    if policy.class_weight:
        # effective images per class: real ones count 1, synthetic ones count synthetic_weight. The
        # class_weight strategy's own formula, so a mix without synthetic images weighs every image
        # bit for bit as that strategy does and trains the same classifier (the loss divides by
        # the batch's weight sum, so only the ratios between classes matter)
        effective = np.bincount(table.labels, weights=weight, minlength=real.num_classes)
        weight = weight * inverse_frequency_weights(effective)[table.labels].astype(np.float32)
    return table, weight


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


def _policy_unit(shared: dict, unit: tuple[MixPolicy, int, np.ndarray]) -> tuple[float, float]:
    """Validation (balanced accuracy, balanced NLL) of a classifier trained on `unit` = (policy,
    seed, synthetic scores)'s mix; `shared` holds "cfg" and "tables" (train, val, synthetic)."""
    cfg, tables = shared["cfg"], shared["tables"]
    policy, seed, scores = unit
    table, weight = mix(tables["train"], tables["synthetic"], scores, policy, seed)
    with cpu_threads(cfg.cpu_threads):
        model = train_classifier(table, tables["val"], cfg, seed, sample_weight=weight, recipe=policy.recipe(cfg.tau),
                                 steps_from=len(tables["train"]), progress=False)
        return validation_scores(model, tables["val"])


def choose_policy(train: ImageTable, val: ImageTable, synthetic: ImageTable, scores: np.ndarray | None,
                  cfg, progress: bool = False, pool: Workers | None = None,
                  judge=None) -> tuple[dict, MixPolicy, np.ndarray]:
    """Try the policies of `cfg.mix`'s grid; keep the best by validation balanced accuracy.

    With `mix.search: staged` and both class_weight values listed, class weighting is decided first
    on the real data alone (cap 0 with and without it: the better of the two plain baselines), and
    the synthetic grid runs with the winner only, instead of the full product (twice the
    classifiers). A zero-cap row can be chosen only when cap_ratio lists 0 (`eligible` in the rows).
    Reads no test data (a shared `pool` may hold it, for the runs that come after). Equal balanced
    accuracies (common: a rare class may have 4 validation images) are decided by the lower
    class-balanced validation NLL, which still separates models that get every validation image
    right; then by the earlier grid point (the grid lists fewer synthetic images first). The
    grid's classifiers run on `pool` (its shared "cfg" and "tables" must be these), else in
    `cfg.workers` processes of their own. Without `scores`, each image is scored by its p(intended
    class) under `judge` (default: a class-weighted classifier trained here on real train, chosen
    on val: `judge.JUDGES["evaluate"]`).

    Returns (report for metrics.json, the chosen policy, the scores it ranks by); `mix(train,
    synthetic, scores, policy)` gives the training set.
    """
    m = cfg.mix
    if scores is None or np.isnan(scores).all():
        judge = judge if judge is not None else fit_judge("evaluate", train, val, cfg, cfg.seed)
        scores, source = intended_class_probability(judge, synthetic), "real-data judge (evaluate)"
    else:
        source = "generate.filter scores"
    with contextlib.ExitStack() as stack:
        if pool is None:
            shared = {"cfg": cfg, "tables": {"train": train, "val": val, "synthetic": synthetic}}
            workers = resolve_workers(cfg.workers, cfg.cpu_threads, resolve_device(cfg.device))
            pool = stack.enter_context(Workers(workers, cfg.cpu_threads, shared))

        def score(grid: list[MixPolicy], stage: int) -> list[dict]:
            units = [(policy, cfg.seed + 10_000 + k, scores) for policy in grid for k in range(m.selection_seeds)]
            scored = list(tqdm(pool.map(_policy_unit, units), total=len(units), desc=f"mixing policy ({stage})",
                               disable=not progress, leave=False))
            rows = []
            for i, policy in enumerate(grid):
                vals = np.array(scored[i * m.selection_seeds : (i + 1) * m.selection_seeds])
                kept = select_synthetic(train.counts(), synthetic.labels, scores, policy)
                rows.append({**describe(policy), "synthetic_rows": int(len(kept)), "stage": stage,
                             "val_balanced_accuracy": float(vals[:, 0].mean()),
                             "val_balanced_nll": float(vals[:, 1].mean())})
            return rows

        weights = list(dict.fromkeys(m.class_weight))
        if m.search == "staged" and len(weights) > 1:
            # stage 1: class weighting on or off, decided on the real data alone (the better of the
            # `none` and `class_weight` baselines); stage 2: the synthetic grid with that setting
            probe = [MixPolicy(0.0, 0.0, 1.0, cw) for cw in weights]
            first = score(probe, 1)
            cw = probe[_best(first)].class_weight
            caps = [c for c in m.cap_ratio if c != 0]
            second = score(policy_grid(caps, m.min_score, m.synthetic_weight, [cw], m.loss, m.trust, m.real_fill), 2
                           ) if caps else []
            zero_allowed = any(c == 0 for c in m.cap_ratio)
            rows = [{**r, "eligible": zero_allowed} for r in first] + [{**r, "eligible": True} for r in second]
        else:
            rows = [{**r, "eligible": True}
                    for r in score(policy_grid(m.cap_ratio, m.min_score, m.synthetic_weight, m.class_weight, m.loss,
                                               m.trust, m.real_fill), 1)]
    grid = [MixPolicy(**{f.name: r[f.name] for f in fields(MixPolicy)}) for r in rows]
    best = _best(rows)
    log.info("mixing policy chosen on validation: %s (val balanced accuracy %.4f)",
             grid[best].name, rows[best]["val_balanced_accuracy"])
    kept = select_synthetic(train.counts(), synthetic.labels, scores, grid[best])
    per_class = np.bincount(synthetic.labels[kept], minlength=train.num_classes)
    report = {
        "chosen": rows[best], "grid": rows, "search": m.search,
        "selected_by": "validation balanced accuracy, ties by class-balanced validation NLL",
        "scores_from": source, "synthetic_per_class": {n: int(c) for n, c in zip(train.class_names, per_class)},
        "judge_score_mean_per_class": {
            n: (float(np.nanmean(scores[synthetic.labels == c])) if (synthetic.labels == c).any() else None)
            for c, n in enumerate(train.class_names)
        },
    }
    return report, grid[best], scores
