"""From the predictions table to the verdict: per-strategy summaries over seeds, the gain of a GAN
strategy over the best non-GAN baseline (paired by seed), and the recommendation chosen on
validation only. `metrics_from_predictions` recomputes all of it from the stored predictions, so
the report and the predictions cannot disagree.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline import metrics as M
from pipeline.strategies import STRATEGIES


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


def validation_nll(predictions: pd.DataFrame, name: str) -> float:
    """Mean over seeds of the class-balanced validation NLL (inf when the table has no p_true)."""
    sub = predictions[(predictions["strategy"] == name) & (predictions["subset"] == "val")]
    if "p_true" not in sub or sub["p_true"].isna().all():
        return math.inf
    return float(np.mean([M.balanced_log_loss(g["y_true"].to_numpy(), g["p_true"].to_numpy())
                          for _, g in sub.groupby("seed")]))


def _accuracy(val: dict[str, dict], name: str) -> float:
    mean = val[name]["balanced_accuracy"]["mean"]
    return -math.inf if mean is None else mean


def pick_by_accuracy(predictions: pd.DataFrame, val: dict[str, dict], names: list[str]) -> str:
    """Highest mean validation balanced accuracy; ties (common: a handful of images per rare
    class) by the lower class-balanced validation NLL, then the earlier listed."""
    best = max(_accuracy(val, n) for n in names)
    tied = [n for n in names if _accuracy(val, n) == best]
    return min(tied, key=lambda n: (validation_nll(predictions, n), names.index(n)))


def pick_by_nll(predictions: pd.DataFrame, val: dict[str, dict], names: list[str]) -> str:
    """Lowest class-balanced validation NLL (a probability for every image, so a class with four
    validation images moves it by degrees, not in steps of a quarter); ties by the higher
    validation balanced accuracy, then the earlier listed."""
    return min(names, key=lambda n: (validation_nll(predictions, n), -_accuracy(val, n), names.index(n)))


# the cheap long-tail recipes in the order of their published strength (CIFAR-10-LT, rho=100:
# mixup-DRW 82.1, logit adjustment 77.9, LDAM-DRW 77.8; logit adjustment with augmentation is the
# two combined): a prior for the case the validation images cannot decide
PUBLISHED_ORDER = ("mixup_drw", "logit_adjust+augment", "logit_adjust", "drw")


def pick_strongest_within_noise(predictions: pd.DataFrame, val: dict[str, dict], names: list[str]) -> str:
    """The balanced-accuracy pick, unless strategies validation cannot put below it (`within_noise`)
    include one of `PUBLISHED_ORDER`: then the first of those. Where the rare classes have a handful
    of validation images, the data leave several strategies tied, and the prior breaks the tie."""
    first = pick_by_accuracy(predictions, val, names)
    if "y_true" not in predictions or predictions.empty:
        return first
    tied = {first, *within_noise(predictions, names, first, int(predictions["y_true"].max()) + 1)}
    return next((n for n in PUBLISHED_ORDER if n in tied), first)


# how the best strategy of a group (non-GAN, GAN) is chosen on validation: evaluate.select_by
SELECTORS = {"balanced_accuracy": pick_by_accuracy, "nll": pick_by_nll,
             "strongest_within_noise": pick_strongest_within_noise}
# evaluate.select_by when params.yaml gives none (config.EvaluateConfig states the same default)
DEFAULT_SELECT_BY = "strongest_within_noise"


def _val_correct(predictions: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, share of `name`'s seeds right) per validation image, in row order."""
    sub = predictions[(predictions["strategy"] == name) & (predictions["subset"] == "val")]
    # a table without `row` (hand-made, or written before rows were recorded) lists each seed's
    # validation images in the same order
    row = sub["row"] if "row" in sub else sub.groupby("seed").cumcount()
    right = (sub["y_true"] == sub["y_pred"]).groupby(row).mean().sort_index()
    labels = sub["y_true"].groupby(row).first().sort_index()
    return labels.to_numpy(), right.to_numpy()


def within_noise(predictions: pd.DataFrame, names: list[str], chosen: str, num_classes: int,
                 seed: int = 0) -> dict[str, dict]:
    """{strategy: its validation difference to `chosen`} for each of `names` that validation cannot
    put below `chosen`: the 95th bootstrap percentile of its lead (class-stratified, as for the GAN
    gate) is not below 0. With a handful of images in the rare classes this is often most of them,
    and the choice among them is then not decided by the data (see benchmarks/selection.py)."""
    labels, right_chosen = _val_correct(predictions, chosen)
    out = {}
    for name in names:
        if name == chosen:
            continue
        d = M.bootstrap_balanced_difference(labels, _val_correct(predictions, name)[1], right_chosen, num_classes,
                                            seed=seed)
        if d["p95"] >= 0:
            out[name] = d
    return out


_CHOSEN_BY = {
    "balanced_accuracy": "mean validation balanced accuracy over the seeds (ties by the lower class-balanced "
                         "validation NLL)",
    "nll": "class-balanced validation NLL over the seeds (ties by the higher validation balanced accuracy)",
    "strongest_within_noise": "mean validation balanced accuracy over the seeds, where strategies validation cannot "
                              "put below that pick (class-stratified bootstrap) include one of "
                              f"{', '.join(PUBLISHED_ORDER)}: the first of those (their published order)",
}


def recommend_rule(select_by: str = DEFAULT_SELECT_BY) -> str:
    """The recommendation rule in words, as the report states it."""
    return (f"the best non-GAN strategy by {_CHOSEN_BY[select_by]}, unless the best GAN strategy (chosen the same "
            "way) beats it in validation balanced accuracy at the 5th percentile of a class-stratified bootstrap "
            "over the validation images (the noise of a class with a handful of images)")


RECOMMEND_RULE = recommend_rule()


def recommend(predictions: pd.DataFrame, val: dict[str, dict], num_classes: int, seed: int = 0,
              select_by: str = DEFAULT_SELECT_BY) -> dict:
    """The strategy to use, chosen on validation only (see `recommend_rule`).

    A GAN strategy is recommended only when its validation lead over the best non-GAN strategy is
    more than the validation set's own noise, so a run never recommends something its evidence
    does not put above the strongest baseline; `synthetic_only` is a diagnostic, never recommended.
    """
    names = [n for n in val if n != "synthetic_only"]
    out = {"strategy": None, "uses_synthetic": False, "baseline": None, "best_gan": None, "rule": recommend_rule(select_by),
           "validation_balanced_accuracy": {n: val[n]["balanced_accuracy"]["mean"] for n in names},
           "evidence": None, "within_noise": {}, "reason": None}
    if not names:
        return out | {"reason": "no validation predictions (evaluate with data.val_fraction > 0)"}
    plain = [n for n in names if not STRATEGIES[n].uses_synthetic]
    gan_names = [n for n in names if STRATEGIES[n].uses_synthetic]
    pick = SELECTORS[select_by]
    base = pick(predictions, val, plain) if plain else None
    best_gan = pick(predictions, val, gan_names) if gan_names else None
    out |= {"baseline": base, "best_gan": best_gan,
            "within_noise": within_noise(predictions, plain, base, num_classes, seed) if base else {}}
    if base is None:
        return out | {"strategy": best_gan, "uses_synthetic": True, "reason": "only GAN strategies were run"}
    if best_gan is None:
        return out | {"strategy": base, "reason": "no GAN strategy was run"}
    labels, right_gan = _val_correct(predictions, best_gan)
    _, right_base = _val_correct(predictions, base)
    evidence = M.bootstrap_balanced_difference(labels, right_gan, right_base, num_classes, seed=seed)
    # the lead this validation set needs before its 5th percentile clears 0, at the noise it shows
    # (the mean minus the 5th percentile): what the user's validation split can tell apart at all
    evidence["needed_lead"] = evidence["mean"] - evidence["p5"]
    out["evidence"] = evidence
    if evidence["p5"] > 0:
        return out | {"strategy": best_gan, "uses_synthetic": True,
                      "reason": f"{best_gan} leads {base} on validation by {100 * evidence['mean']:+.2f} points, "
                                f"above the validation noise (5th percentile {100 * evidence['p5']:+.2f})"}
    lead = ("ties it" if evidence["mean"] == 0 else f"trails it by {100 * -evidence['mean']:.2f} points"
            ) if evidence["mean"] <= 0 else (
        f"leads by {100 * evidence['mean']:+.2f} points, within the validation noise "
        f"(5th percentile {100 * evidence['p5']:+.2f}; a lead of about {100 * evidence['needed_lead']:+.2f} "
        "would count on this validation set)")
    return out | {"strategy": base, "reason": f"the best GAN strategy on validation, {best_gan}, {lead}"}


def metrics_from_predictions(predictions: pd.DataFrame, class_names: tuple[str, ...] | list[str],
                             select_by: str = DEFAULT_SELECT_BY) -> dict:
    """The metrics.json core from the predictions table: `strategies`, `balanced_test`, `validation`, `gain`.

    Everything is recomputed from `predictions` (columns strategy, seed, subset, y_true, y_pred),
    so the report's numbers and the stored predictions cannot disagree; `select_by` is the
    recommendation's criterion (`SELECTORS`).
    """
    k = len(class_names)
    test = summarize_predictions(predictions, k, "test")
    val = summarize_predictions(predictions, k, "val")
    selection = {n: s for n, s in val.items() if n in test} or None
    rec = recommend(predictions, val, k, select_by=select_by)
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
