"""Downstream evaluation: one classifier trained under each strategy for several seeds, scored once
on the untouched test set and on a seeded class-balanced subsample of it.
`STRATEGIES[name].prepare` gives a strategy's training data, `train_classifier` is the one training
loop (model chosen on validation), `evaluate` runs strategies x seeds -> metrics + predictions.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from pipeline.progress import tqdm

from pipeline import io
from pipeline import metrics as M
from pipeline.config import EvaluateConfig
from pipeline.data import ImageTable, random_oversample
from pipeline.device import choose_precision, precision_name
from pipeline.errors import DataError
from pipeline.mixing import choose_policy, mix
from pipeline.parallel import Workers, resolve_workers
from torch import nn

from pipeline.classifier_recipe import Recipe, SyntheticUse, inverse_frequency_weights
from pipeline.judge import fit_judge
from pipeline.models.classifiers import label_probability
from pipeline.training import cpu_threads, logits, resolve_device, train_classifier

# ---- strategies -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSet:
    """What one strategy trains on: real rows (as they are, duplicated or interpolated), per-row and
    per-class loss weights, the training recipe and an optional synthetic pool."""

    table: ImageTable
    class_weight: np.ndarray | None = None
    augment: bool = False
    sample_weight: np.ndarray | None = None
    recipe: Recipe | None = None
    synthetic: SyntheticUse | None = None


@dataclass(frozen=True)
class StrategyInputs:
    """What a strategy may build its training set from (never the test split).

    `mixed` is the real+synthetic set of the mixing policy chosen on validation (strategy
    `gan_policy`), or None when that strategy is not run; `cfg` carries the recipes' knobs
    (tau, late_fraction, mixup_alpha).
    """

    train: ImageTable
    synthetic: ImageTable | None
    add: np.ndarray
    seed: int
    mixed: TrainingSet | None = None
    cfg: EvaluateConfig | None = None


@dataclass(frozen=True)
class Strategy:
    """A way to train on imbalanced data.

    Attributes:
        name: registry key (params.yaml `evaluate.strategies`).
        uses_synthetic: needs the GAN's images (skipped, with the reason, when there are none).
        prepare: StrategyInputs (train, synthetic or None, add (K,) images to add per class, seed,
            the policy's mix) -> TrainingSet.
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
    cfg = i.cfg or EvaluateConfig()
    return Recipe(**{"tau": cfg.tau, "late_fraction": cfg.late_fraction, **kw})


def synthetic_pool(synthetic: ImageTable, add: np.ndarray, phase: str) -> SyntheticUse:
    """The generated set as a pool: each epoch draws the plan's count per class afresh (a pool
    several times the plan, `generate.pool_factor`, then repeats no image until it is used up);
    a pool no larger than the plan joins whole every epoch. Every synthetic row weighs 1."""
    have = synthetic.counts()
    per_epoch = np.minimum(add, have) if (have > add).any() else None
    return SyntheticUse(synthetic, np.ones(len(synthetic), np.float32), per_epoch, phase)


def _with_pool(i: StrategyInputs, phase: str, **recipe) -> TrainingSet:
    if i.synthetic is None or len(i.synthetic) == 0:
        raise DataError("this strategy needs synthetic images; run `augment generate` first")
    return TrainingSet(i.train, recipe=_recipe(i, **recipe), synthetic=synthetic_pool(i.synthetic, i.add, phase))


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
                                                          mixup_alpha=(i.cfg or EvaluateConfig()).mixup_alpha)),
            "mixup all along with deferred re-weighting",
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


def plan_counts(plan: dict[str, int], class_names: tuple[str, ...]) -> np.ndarray:
    """plan.json {class name: n_to_add} -> int64 (K,), 0 for classes the plan leaves out."""
    index = {name: i for i, name in enumerate(class_names)}
    add = np.zeros(len(class_names), dtype=np.int64)
    for name, n in plan.items():
        if str(name) not in index:
            raise DataError(
                f"plan.json: class {name!r} is not in the data (classes: {', '.join(class_names)}); "
                "run `augment plan` again"
            )
        if int(n) < 0:
            raise DataError(f"plan.json: class {name!r} has a negative count {n}")
        add[index[str(name)]] = int(n)
    return add


# ---- the evaluation: strategies x seeds -------------------------------------------------------

SUBSETS = ("test", "balanced_test", "val")


def balanced_subsample(labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """Sorted row indices with the same number of images (the rarest present class's) per class."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels, minlength=num_classes)
    n = int(counts[counts > 0].min())
    rows = [rng.choice(np.flatnonzero(labels == c), n, replace=False) for c in np.flatnonzero(counts)]
    return np.sort(np.concatenate(rows))


def fingerprint(table: ImageTable) -> str:
    """sha256 of a table's pixels, labels and class names: the data version the metrics came from."""
    h = hashlib.sha256()
    for part in (np.ascontiguousarray(table.images), table.labels.astype("<i8")):
        h.update(part.tobytes())
    h.update("\n".join(table.class_names).encode())
    return h.hexdigest()


def _check_tables(train: ImageTable, val: ImageTable, test: ImageTable, synthetic: ImageTable | None) -> None:
    named = {"val": val, "test": test} | ({"synthetic": synthetic} if synthetic is not None else {})
    for name, t in named.items():
        if t.class_names != train.class_names:
            raise DataError(
                f"{name} classes {list(t.class_names)} differ from train classes {list(train.class_names)}; "
                f"rebuild {name} from the same prepared data"
            )
        if len(t) and t.image_shape != train.image_shape:
            raise DataError(f"{name} images are {t.image_shape}, train images {train.image_shape}; use one shape")
    if len(test) == 0:
        raise DataError("the test split is empty; set data.test_fraction or provide test.npz")


def _runnable(names: list[str], synthetic: ImageTable | None) -> tuple[list[str], dict[str, str]]:
    if synthetic is not None and len(synthetic) > 0:
        return list(names), {}
    why = ("no synthetic data were given (run `augment train-gan` and `augment generate`)"
           if synthetic is None else "the synthetic dataset is empty (the plan adds no image)")
    skipped = {n: why for n in names if STRATEGIES[n].uses_synthetic}
    return [n for n in names if n not in skipped], skipped


def _prediction_rows(name: str, seed: int, subset: str, rows: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
                     p_true: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({
        "strategy": name, "seed": seed, "subset": subset, "row": rows.astype(np.int64),
        "y_true": y_true.astype(np.int64), "y_pred": y_pred.astype(np.int64), "p_true": p_true.astype(np.float32),
    })


def _scored(model, table: ImageTable) -> tuple[np.ndarray, np.ndarray]:
    """(predicted labels, p(true label)) of every image of `table`, one forward pass."""
    z = logits(model, table.images)
    return z.argmax(1).numpy().astype(np.int64), label_probability(z, torch.from_numpy(table.labels)).numpy()


def fit_training_set(ts: TrainingSet, tables: dict[str, ImageTable], cfg: EvaluateConfig, seed: int):
    """The classifier of one training set; every strategy takes the optimiser steps of the real
    training set (`tables["train"]`), whatever rows it adds."""
    return train_classifier(ts.table, tables["val"], cfg, seed, class_weight=ts.class_weight,
                            sample_weight=ts.sample_weight, augment=ts.augment, recipe=ts.recipe,
                            synthetic=ts.synthetic, steps_from=len(tables["train"]), progress=False)


def run_strategy(name: str, cfg: EvaluateConfig, tables: dict[str, ImageTable], add: np.ndarray,
                 seed: int, balanced_rows: np.ndarray | None, mixed: TrainingSet | None = None) -> pd.DataFrame:
    """Train one strategy with one seed; its predictions on test, balanced_test and val."""
    inputs = StrategyInputs(tables["train"], tables.get("synthetic"), add, seed, mixed, cfg)
    model = fit_training_set(STRATEGIES[name].prepare(inputs), tables, cfg, seed)
    test, val = tables["test"], tables["val"]
    pred, p = _scored(model, test)  # the test split is predicted once per model
    parts = [_prediction_rows(name, seed, "test", np.arange(len(test)), test.labels, pred, p)]
    if balanced_rows is not None:
        parts.append(_prediction_rows(name, seed, "balanced_test", balanced_rows, test.labels[balanced_rows],
                                      pred[balanced_rows], p[balanced_rows]))
    if len(val):
        parts.append(_prediction_rows(name, seed, "val", np.arange(len(val)), val.labels, *_scored(model, val)))
    return pd.concat(parts, ignore_index=True)


def summarize_predictions(predictions: pd.DataFrame, num_classes: int, subset: str) -> dict[str, dict]:
    """{strategy: summary over seeds} for one subset, strategies in order of first appearance."""
    out = {}
    sub = predictions[predictions["subset"] == subset]
    for name in dict.fromkeys(sub["strategy"]):
        runs = [
            M.classification_metrics(g["y_true"].to_numpy(), g["y_pred"].to_numpy(), num_classes)
            for _, g in sub[sub["strategy"] == name].groupby("seed", sort=True)
        ]
        out[name] = M.summarize_runs(runs)
    return out


def gain(test: dict[str, dict], selection: dict[str, dict] | None, strategy: str = "gan",
         baseline: str | None = None) -> dict:
    """`strategy` minus the best non-GAN strategy in test balanced accuracy, paired by seed.

    The baseline is `baseline` when given (the recommendation's, chosen on validation with its tie
    rule), else the non-GAN strategy with the best mean balanced accuracy on `selection` (the
    validation summaries); without validation it is chosen on the test set, which favours the
    baseline. Verdict: "gain" only when the 95% CI lies above 0; one seed cannot show a gain.
    """
    out = {"strategy": strategy, "baseline": None, "selected_by": None, "balanced_accuracy": None,
           "significant": False, "verdict": None, "reason": None}
    candidates = [n for n in test if not STRATEGIES[n].uses_synthetic]
    if strategy not in test:
        return out | {"reason": f"strategy {strategy!r} was not run"}
    if not candidates:
        return out | {"reason": "no non-GAN strategy was run to compare with"}
    source, how = (selection, "validation balanced accuracy") if selection else (
        test, "test balanced accuracy (no validation images; this favours the baseline)")
    if baseline is None or baseline not in test:
        scores = {n: source[n]["balanced_accuracy"]["mean"] for n in candidates if n in source}
        baseline = M.best_strategy({n: -math.inf if s is None else s for n, s in scores.items()})
    diff = M.paired_difference(test[strategy]["balanced_accuracy"]["per_seed"],
                               test[baseline]["balanced_accuracy"]["per_seed"])
    if len(diff["per_seed"]) < 2:
        verdict = "no gain" if diff["mean"] <= 0 else "undetermined"
    else:
        verdict = "gain" if diff["ci95"][0] > 0 else "no gain"
    return out | {"baseline": baseline, "selected_by": how, "balanced_accuracy": diff,
                  "significant": verdict == "gain", "verdict": verdict}


def _val_nll(predictions: pd.DataFrame, name: str) -> float:
    """Mean over seeds of the class-balanced validation NLL (inf when the table has no p_true)."""
    sub = predictions[(predictions["strategy"] == name) & (predictions["subset"] == "val")]
    if "p_true" not in sub or sub["p_true"].isna().all():
        return math.inf
    return float(np.mean([M.balanced_log_loss(g["y_true"].to_numpy(), g["p_true"].to_numpy())
                          for _, g in sub.groupby("seed")]))


def _best_on_validation(predictions: pd.DataFrame, val: dict[str, dict], names: list[str]) -> str:
    """Highest mean validation balanced accuracy; ties (common: a handful of images per rare
    class) by the lower class-balanced validation NLL, then the earlier listed."""
    acc = {n: -math.inf if val[n]["balanced_accuracy"]["mean"] is None else val[n]["balanced_accuracy"]["mean"]
           for n in names}
    tied = [n for n in names if acc[n] == max(acc.values())]
    return min(tied, key=lambda n: (_val_nll(predictions, n), names.index(n)))


def _val_correct(predictions: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, share of `name`'s seeds right) per validation image, in row order."""
    sub = predictions[(predictions["strategy"] == name) & (predictions["subset"] == "val")]
    # a table without `row` (hand-made, or written before rows were recorded) lists each seed's
    # validation images in the same order
    row = sub["row"] if "row" in sub else sub.groupby("seed").cumcount()
    right = (sub["y_true"] == sub["y_pred"]).groupby(row).mean().sort_index()
    labels = sub["y_true"].groupby(row).first().sort_index()
    return labels.to_numpy(), right.to_numpy()


RECOMMEND_RULE = (
    "the best non-GAN strategy by mean validation balanced accuracy over the seeds (ties by the lower "
    "class-balanced validation NLL), unless the best GAN "
    "strategy beats it on validation at the 5th percentile of a class-stratified bootstrap over the "
    "validation images (the noise of a class with a handful of images)"
)


def recommend(predictions: pd.DataFrame, val: dict[str, dict], num_classes: int, seed: int = 0) -> dict:
    """The strategy to use, chosen on validation only (see `RECOMMEND_RULE`).

    A GAN strategy is recommended only when its validation lead over the best non-GAN strategy is
    more than the validation set's own noise, so a run never recommends something its evidence
    does not put above the strongest baseline; `synthetic_only` is a diagnostic, never recommended.
    """
    names = [n for n in val if n != "synthetic_only"]
    out = {"strategy": None, "uses_synthetic": False, "baseline": None, "best_gan": None, "rule": RECOMMEND_RULE,
           "validation_balanced_accuracy": {n: val[n]["balanced_accuracy"]["mean"] for n in names},
           "evidence": None, "reason": None}
    if not names:
        return out | {"reason": "no validation predictions (evaluate with data.val_fraction > 0)"}
    plain = [n for n in names if not STRATEGIES[n].uses_synthetic]
    gan_names = [n for n in names if STRATEGIES[n].uses_synthetic]
    base = _best_on_validation(predictions, val, plain) if plain else None
    best_gan = _best_on_validation(predictions, val, gan_names) if gan_names else None
    out |= {"baseline": base, "best_gan": best_gan}
    if base is None:
        return out | {"strategy": best_gan, "uses_synthetic": True, "reason": "only GAN strategies were run"}
    if best_gan is None:
        return out | {"strategy": base, "reason": "no GAN strategy was run"}
    labels, right_gan = _val_correct(predictions, best_gan)
    _, right_base = _val_correct(predictions, base)
    evidence = M.bootstrap_balanced_difference(labels, right_gan, right_base, num_classes, seed=seed)
    out["evidence"] = evidence
    if evidence["p5"] > 0:
        return out | {"strategy": best_gan, "uses_synthetic": True,
                      "reason": f"{best_gan} leads {base} on validation by {100 * evidence['mean']:+.2f} points, "
                                f"above the validation noise (5th percentile {100 * evidence['p5']:+.2f})"}
    lead = (f"ties it" if evidence["mean"] == 0 else f"trails it by {100 * -evidence['mean']:.2f} points"
            ) if evidence["mean"] <= 0 else (
        f"leads by {100 * evidence['mean']:+.2f} points, within the validation noise "
        f"(5th percentile {100 * evidence['p5']:+.2f})")
    return out | {"strategy": base, "reason": f"the best GAN strategy on validation, {best_gan}, {lead}"}


def metrics_from_predictions(predictions: pd.DataFrame, class_names: tuple[str, ...] | list[str]) -> dict:
    """The metrics.json core from the predictions table: `strategies`, `balanced_test`, `validation`, `gain`.

    Everything is recomputed from `predictions` (columns strategy, seed, subset, y_true, y_pred),
    so the report's numbers and the stored predictions cannot disagree.
    """
    k = len(class_names)
    test = summarize_predictions(predictions, k, "test")
    val = summarize_predictions(predictions, k, "val")
    selection = {n: s for n, s in val.items() if n in test} or None
    rec = recommend(predictions, val, k)
    # the headline gain: the GAN strategy the validation set ranks first (gan_policy or gan without
    # validation) against the non-GAN strategy it ranks first
    headline = rec["best_gan"] or ("gan_policy" if "gan_policy" in test else "gan")
    out = {
        "strategies": test,
        "validation": {"strategies": {n: {"balanced_accuracy": s["balanced_accuracy"]} for n, s in val.items()}},
        "gain": gain(test, selection, headline, rec["baseline"]),
        "gains": {n: gain(test, selection, n, rec["baseline"]) for n in test if STRATEGIES[n].uses_synthetic},
        "recommendation": rec,
    }
    balanced = summarize_predictions(predictions, k, "balanced_test")
    if balanced:
        base = out["gain"]["baseline"]
        sub = predictions[(predictions["subset"] == "balanced_test")]
        rows = int(sub.groupby(["strategy", "seed"]).size().iloc[0])
        # same strategy and baseline as on the full test set: the subsample is for reading, not for
        # re-selection
        bal_gain = gain(balanced, {base: balanced[base]} if base else None, out["gain"]["strategy"])
        out["balanced_test"] = {"rows": rows, "per_class": rows // k, "strategies": balanced, "gain": bal_gain}
    return out


def _notes(metrics: dict, seeds: list[int], tables: dict[str, ImageTable]) -> list[str]:
    notes = [f"Confidence intervals: {M.CI_METHOD}."]
    if len(seeds) == 1:
        notes.append("One seed: every interval is [mean, mean] and no difference can be called significant.")
    g = metrics["gain"]
    if g["baseline"]:
        notes.append(f"Baseline for the gain: {g['baseline']}, the best non-GAN strategy by {g['selected_by']}.")
    synthetic = tables.get("synthetic")
    if synthetic is not None and "synthetic_only" in metrics["strategies"]:
        missing = [n for n, c in zip(synthetic.class_names, synthetic.counts()) if c == 0]
        if missing:
            notes.append(f"synthetic_only never sees class(es) {', '.join(missing)} (the plan adds none), "
                         "so their recall is 0 by construction.")
    return notes


def _gan_quality(cfg: EvaluateConfig, tables: dict[str, ImageTable], judge: nn.Module | None) -> tuple[dict | None, str | None]:
    from pipeline.quality import gan_quality

    if "synthetic" not in tables:
        return None, "no synthetic data to score"
    if not cfg.gan_quality:
        return None, "evaluate.gan_quality is false"
    return gan_quality(tables["train"], tables["test"], tables["synthetic"], judge, cfg.seed), None


def _unscored(scores: np.ndarray | None) -> bool:
    return scores is None or bool(np.isnan(scores).all())


def _judge(cfg: EvaluateConfig, tables: dict[str, ImageTable], names: list[str], scores: np.ndarray | None,
           progress: bool) -> nn.Module | None:
    """The evaluation's real-data judge (`judge.JUDGES["evaluate"]`) that scores unscored synthetic images for
    gan_policy and embeds images for the GAN-quality metrics; None when neither needs it. It trains
    on `cpu_threads` like every run (more threads round differently, and the policy's scores would
    then depend on `evaluate.workers`)."""
    if "synthetic" not in tables or not (cfg.gan_quality or ("gan_policy" in names and _unscored(scores))):
        return None
    return fit_judge("evaluate", tables["train"], tables["val"], cfg, cfg.seed, progress=progress)


def _strategy_unit(shared: dict, unit: tuple) -> tuple[pd.DataFrame, float]:
    """One run: `unit` = (strategy, seed, mix), mix = (policy, scores) for `gan_policy` else None;
    `shared` holds "cfg", "tables", "add" and "balanced_rows". Returns (predictions, seconds)."""
    cfg, tables = shared["cfg"], shared["tables"]
    name, seed, mix_spec = unit
    start = time.perf_counter()
    mixed = None
    if mix_spec is not None:
        policy, scores = mix_spec
        table, weight = mix(tables["train"], tables["synthetic"], scores, policy, seed)
        mixed = TrainingSet(table, sample_weight=weight, recipe=policy.recipe(cfg.tau))
    with cpu_threads(cfg.cpu_threads):
        frame = run_strategy(name, cfg, tables, shared["add"], seed, shared["balanced_rows"], mixed)
    return frame, time.perf_counter() - start


def _run_all(shared: dict, names: list[str], seeds: list[int], mix_spec: tuple | None, progress: bool,
             run: Callable) -> tuple[pd.DataFrame, dict]:
    """Every (strategy, seed) run through `run(fn, units)`; the predictions table and seconds per strategy.

    Runs are independent, so `run` may place them anywhere and in any order (local worker
    processes, Prefect tasks on a Dask cluster) as long as results come back in the order of
    `units`; a run's predictions depend only on its strategy, seed and thread count.
    """
    units = [(name, seed, mix_spec if name == "gan_policy" else None) for name in names for seed in seeds]
    results = list(tqdm(run(_strategy_unit, units), total=len(units), desc="evaluate", disable=not progress))
    timing: dict[str, float] = defaultdict(float)
    for (name, _, _), (_, seconds) in zip(units, results):
        timing[name] = round(timing[name] + seconds, 2)
    return pd.concat([frame for frame, _ in results], ignore_index=True), dict(timing)


def evaluate(
    cfg: EvaluateConfig,
    train: ImageTable,
    val: ImageTable,
    test: ImageTable,
    synthetic: ImageTable | None,
    plan: dict[str, int],
    progress: bool = True,
    synthetic_scores: np.ndarray | None = None,
    mapper: Callable | None = None,
) -> dict:
    """Every strategy in `cfg.strategies` x `cfg.seeds` seeds, scored on test and its balanced subsample.

    Args:
        cfg: the `evaluate` section of params.yaml.
        train, val, test: the prepared real splits (val chooses models and the baseline; test is
            predicted once per trained model).
        synthetic: the generated images, or None (GAN strategies are then skipped, with the reason).
        plan: {class name: images to add}, the quota oversample/smote fill.
        progress: show a progress bar over runs.
        synthetic_scores: (len(synthetic),) quality scores recorded at generation (NaN = none);
            strategy `gan_policy` scores unscored images with a real-data judge.
        mapper: optional `mapper(fn, units)` running the independent (strategy, seed) units, e.g.
            as Prefect tasks on a Dask cluster; results must come back in the order of `units`.

    Returns:
        {"metrics": the metrics.json dict, "predictions": DataFrame strategy, seed, subset, row, y_true, y_pred}.
    """
    _check_tables(train, val, test, synthetic)
    add = plan_counts(plan, train.class_names)
    names, skipped = _runnable(cfg.strategies, synthetic)
    if not names:
        raise DataError(f"no strategy can run: {'; '.join(f'{n}: {r}' for n, r in skipped.items())}")
    tables = {"train": train, "val": val, "test": test}
    if synthetic is not None and len(synthetic):
        tables["synthetic"] = synthetic
    balanced_rows = balanced_subsample(test.labels, test.num_classes, cfg.seed) if cfg.balanced_test else None
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    shared = {"cfg": cfg, "tables": tables, "add": add, "balanced_rows": balanced_rows}
    workers = resolve_workers(cfg.workers, cfg.cpu_threads, resolve_device(cfg.device))
    start = time.perf_counter()
    judge = _judge(cfg, tables, names, synthetic_scores, progress)
    judge_seconds = time.perf_counter() - start
    with Workers(workers, cfg.cpu_threads, shared) as pool:
        report, mix_spec = None, None
        if "gan_policy" in names:
            with cpu_threads(cfg.cpu_threads):
                report, policy, scores = choose_policy(train, val, synthetic, synthetic_scores, cfg, progress, pool, judge)
            mix_spec = (policy, scores)
        run = pool.map if mapper is None else (lambda fn, units: mapper(functools.partial(fn, shared), units))
        predictions, timing = _run_all(shared, names, seeds, mix_spec, progress, run)
    metrics = {
        "schema": 1, "classifier": cfg.classifier, "epochs": cfg.epochs, "seeds": seeds, "workers": workers,
        "precision": precision_name(choose_precision(cfg.precision, resolve_device(cfg.device))),
        "ci_method": M.CI_METHOD, "class_names": list(train.class_names),
        "train_counts": train.counts().tolist(), "test_counts": test.counts().tolist(),
        "plan": {n: int(a) for n, a in zip(train.class_names, add)},
        "strategy_descriptions": {n: STRATEGIES[n].description for n in cfg.strategies},
        **metrics_from_predictions(predictions, train.class_names),
        "skipped": skipped,
        "mix_policy": report,
        "data": {n: {"rows": len(t), "sha256": fingerprint(t)} for n, t in tables.items()},
    }
    start = time.perf_counter()
    with cpu_threads(cfg.cpu_threads):
        metrics["gan_quality"], why = _gan_quality(cfg, tables, judge)
    if why:
        metrics["skipped"]["gan_quality"] = why
    timing["judge"] = round(judge_seconds, 2)
    timing["gan_quality"] = round(time.perf_counter() - start, 2)
    metrics["timing_s"] = timing
    metrics["notes"] = _notes(metrics, seeds, tables)
    return {"metrics": metrics, "predictions": predictions}


def write_results(out_dir: str | Path, result: dict) -> list[Path]:
    """Write `metrics.json` and `predictions.parquet` into `out_dir` as one atomic pair (metrics.json
    renamed last, so the pair is never from two runs); return the paths."""
    out_dir = Path(out_dir)
    metrics_path, pred_path = out_dir / "metrics.json", out_dir / "predictions.parquet"
    with io.atomic_paths([pred_path, metrics_path]) as (pred_tmp, metrics_tmp):
        result["predictions"].to_parquet(pred_tmp, index=False)
        io.write_json(metrics_tmp, result["metrics"])
    return [metrics_path, pred_path]


def read_results(out_dir: str | Path) -> dict:
    """`metrics.json` and `predictions.parquet` from `out_dir`, as `evaluate` returned them."""
    import json

    out_dir = Path(out_dir)
    metrics_path, pred_path = out_dir / "metrics.json", out_dir / "predictions.parquet"
    for p in (metrics_path, pred_path):
        if not p.is_file():
            raise DataError(f"{p}: not found; run `augment evaluate` first")
    return {"metrics": json.loads(metrics_path.read_text(encoding="utf-8")), "predictions": pd.read_parquet(pred_path)}
