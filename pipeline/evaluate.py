"""Downstream evaluation: one classifier trained under each strategy for several seeds, scored once
on the untouched test set and on a seeded class-balanced subsample of it, and the results files.
`evaluate` runs strategies (`pipeline.strategies`) x seeds -> predictions, summarised into
metrics.json by `pipeline.recommend`; `pipeline.results` stores and loads the pair.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline import metrics as M
from pipeline.classifier_recipe import TrainingSet
from pipeline.config import EvaluateConfig
from pipeline.data import ImageTable, data_fingerprint
from pipeline.device import choose_precision, precision_name
from pipeline.errors import DataError
from pipeline.finished_runs import FinishedRuns, real_fingerprints, run_key
from pipeline.judge import cached_judge, fit_judge
from pipeline.mixing import Mix, choose_policy
from pipeline.models.classifiers import label_probability
from pipeline.parallel import Workers, resolve_workers
from pipeline.progress import tqdm
from pipeline.quality import gan_quality
from pipeline.recommend import metrics_from_predictions
from pipeline.strategies import STRATEGIES, StrategyInputs
from pipeline.threads import cpu_threads
from pipeline.training import logits, resolve_device, train_classifier

log = logging.getLogger("augment")


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


def _warn_uneven_plan(cfg: EvaluateConfig, add: np.ndarray, class_names: tuple[str, ...]) -> None:
    """`synthetic_spread: even` hides which classes are short only where the plan adds rows to every class."""
    bare = [c for c, n in zip(class_names, add) if n <= 0]
    if cfg.synthetic_spread != "even" or not bare:
        return
    named = ", ".join(map(repr, bare[:5])) + (f" and {len(bare) - 5} more" if len(bare) > 5 else "")
    they = "it draws" if len(bare) == 1 else "they draw"
    log.warning("evaluate.synthetic_spread even: the plan adds no images to %s, so %s no synthetic rows and a "
                "generated row still tells the classifier its class is short of images; set "
                "plan.sampling_strategy to an int above the largest class", named, they)


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
    return train_classifier(ts, tables["val"], cfg, seed, steps_from=len(tables["train"]), progress=False)


def run_strategy(name: str, cfg: EvaluateConfig, tables: dict[str, ImageTable], add: np.ndarray,
                 seed: int, balanced_rows: np.ndarray | None, mixed: TrainingSet | None = None) -> pd.DataFrame:
    """Train one strategy with one seed; its predictions on test, balanced_test and val."""
    inputs = StrategyInputs(tables["train"], tables.get("synthetic"), add, seed, cfg, mixed)
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


def _gan_quality(cfg: EvaluateConfig, tables: dict[str, ImageTable],
                 judge: nn.Module | None) -> tuple[dict | None, str | None]:
    if "synthetic" not in tables:
        return None, "no synthetic data to score"
    if not cfg.gan_quality:
        return None, "evaluate.gan_quality is false"
    return gan_quality(tables["train"], tables["test"], tables["synthetic"], judge, cfg.seed), None


def _unscored(scores: np.ndarray | None) -> bool:
    return scores is None or bool(np.isnan(scores).all())


def _judge(cfg: EvaluateConfig, tables: dict[str, ImageTable], names: list[str], scores: np.ndarray | None,
           progress: bool, finished: FinishedRuns | None = None) -> nn.Module | None:
    """The evaluation's real-data judge (`judge.JUDGES["evaluate"]`) that scores unscored synthetic images for
    gan_policy and embeds images for the GAN-quality metrics; None when neither needs it. It trains
    on `cpu_threads` like every run (more threads round differently, and the policy's scores would
    then depend on `evaluate.workers`). With `finished`, it is kept beside the finished runs and
    read back by a resumed evaluation of the same inputs."""
    if "synthetic" not in tables or not (cfg.gan_quality or ("gan_policy" in names and _unscored(scores))):
        return None
    fit = functools.partial(fit_judge, "evaluate", tables["train"], tables["val"], cfg, cfg.seed, progress=progress)
    if finished is None:
        return fit()
    return cached_judge(finished.judge_path(), finished.real_key, tables["train"], fit).to(resolve_device(cfg.device))


def _finished_runs(runs_dir: str | Path, cfg: EvaluateConfig, fingerprints: dict[str, str], add: np.ndarray,
                   device: torch.device) -> FinishedRuns:
    """The evaluation's finished runs: a strategy that never reads the synthetic data is named
    without its fingerprint, so a new GAN leaves its runs valid."""
    key = functools.partial(run_key, cfg.model_dump(mode="json"), plan=add.tolist(), device=device.type,
                            precision=precision_name(choose_precision(cfg.precision, device)))
    real_only = {name for name, s in STRATEGIES.items() if not s.uses_synthetic}
    return FinishedRuns(runs_dir, key(fingerprints), key(real_fingerprints(fingerprints)), real_only)


def _strategy_unit(shared: dict, unit: tuple) -> tuple[pd.DataFrame, float, bool]:
    """One run: `unit` = (strategy, seed, chosen), chosen = the policy's `mixing.Mix` for
    `gan_policy` else None; `shared` holds "cfg", "tables", "add", "balanced_rows" and "finished"
    (a `FinishedRuns` or None). Returns (predictions, seconds, whether a finished run was read)."""
    cfg, tables, finished = shared["cfg"], shared["tables"], shared["finished"]
    name, seed, chosen = unit
    if finished is not None and (done := finished.load(name, seed, chosen)) is not None:
        return done[0], done[1], True
    start = time.perf_counter()
    mixed = None if chosen is None else chosen.training_set(tables["train"], tables["synthetic"], seed, cfg.tau)
    with cpu_threads(cfg.cpu_threads):
        frame = run_strategy(name, cfg, tables, shared["add"], seed, shared["balanced_rows"], mixed)
    seconds = time.perf_counter() - start
    if finished is not None:
        finished.save(name, seed, chosen, frame, seconds)
    return frame, seconds, False


def _run_all(shared: dict, names: list[str], seeds: list[int], chosen: Mix | None, progress: bool,
             run: Callable) -> tuple[pd.DataFrame, dict, int]:
    """Every (strategy, seed) run through `run(fn, units)`; the predictions table, the seconds per
    strategy (a finished run read from disk counts the seconds it took when it trained) and how
    many runs were read rather than trained.

    Runs are independent, so `run` may place them anywhere and in any order (local worker
    processes, Prefect tasks on a Dask cluster) as long as results come back in the order of
    `units`; a run's predictions depend only on its strategy, seed and thread count.
    """
    units = [(name, seed, chosen if name == "gan_policy" else None) for name in names for seed in seeds]
    finished = shared["finished"]
    if finished is not None:
        done = sum(finished.path(*u).is_file() for u in units)
        if done:
            log.info("evaluate: %d of %d runs finished earlier are read from %s", done, len(units), finished.folder)
    results = list(tqdm(run(_strategy_unit, units), total=len(units), desc="evaluate", disable=not progress))
    timing: dict[str, float] = defaultdict(float)
    for (name, _, _), (_, seconds, _) in zip(units, results):
        timing[name] = round(timing[name] + seconds, 2)
    if finished is not None:
        removed = finished.prune({finished.path(*u) for u in units})
        if removed:
            log.info("evaluate: removed %d run file(s) of other settings from %s", removed, finished.folder)
    reused = sum(r for _, _, r in results)
    return pd.concat([frame for frame, _, _ in results], ignore_index=True), dict(timing), reused


def _choose_mix(cfg: EvaluateConfig, tables: dict[str, ImageTable], names: list[str], scores: np.ndarray | None,
                pool: Workers, judge: nn.Module | None, progress: bool) -> tuple[dict | None, Mix | None]:
    """(metrics.json `mix_policy`, the chosen mix) when `gan_policy` runs, else (None, None)."""
    if "gan_policy" not in names:
        return None, None
    with cpu_threads(cfg.cpu_threads):
        return choose_policy(tables, scores, cfg, progress=progress, pool=pool, judge=judge)


def _header(cfg: EvaluateConfig, tables: dict[str, ImageTable], add: np.ndarray, seeds: list[int]) -> dict:
    """metrics.json's opening keys: the run's settings, classes, counts and plan. `workers` is the
    setting, not what "auto" resolved to: that depends on the load at run time, and the results do
    not (a DVC output must not change with the machine's load)."""
    train, test = tables["train"], tables["test"]
    return {
        "schema": 1, "classifier": cfg.classifier, "epochs": cfg.epochs, "seeds": seeds, "workers": cfg.workers,
        "precision": precision_name(choose_precision(cfg.precision, resolve_device(cfg.device))),
        "ci_method": M.CI_METHOD, "class_names": list(train.class_names),
        "train_counts": train.counts().tolist(), "test_counts": test.counts().tolist(),
        "plan": {n: int(a) for n, a in zip(train.class_names, add)},
        "strategy_descriptions": {n: STRATEGIES[n].description for n in cfg.strategies},
    }


@dataclass(frozen=True)
class EvalData:
    """What `evaluate` reads: the prepared real splits (val chooses models and the baseline; test is
    predicted once per trained model), the generated images or None (GAN strategies are then
    skipped, with the reason), and their (len(synthetic),) scores recorded at generation (NaN or
    None = none: strategy `gan_policy` then scores them with the real-data judge)."""

    train: ImageTable
    val: ImageTable
    test: ImageTable
    synthetic: ImageTable | None = None
    synthetic_scores: np.ndarray | None = None

    def tables(self) -> dict[str, ImageTable]:
        """train, val, test and, when it has rows, synthetic."""
        tables = {"train": self.train, "val": self.val, "test": self.test}
        if self.synthetic is not None and len(self.synthetic):
            tables["synthetic"] = self.synthetic
        return tables


def evaluate(cfg: EvaluateConfig, data: EvalData, plan: dict[str, int], progress: bool = True,
             mapper: Callable | None = None, runs_dir: str | Path | None = None) -> dict:
    """Every strategy in `cfg.strategies` x `cfg.seeds` seeds, scored on test and its balanced subsample.

    Args:
        cfg: the `evaluate` section of params.yaml.
        data: the real splits, the synthetic images and their scores.
        plan: {class name: images to add}, the quota oversample/smote fill.
        progress: show a progress bar over runs.
        mapper: optional `mapper(fn, units)` running the independent (strategy, seed) units, e.g.
            as Prefect tasks on a Dask cluster; results must come back in the order of `units`.
        runs_dir: where each finished run's predictions are kept (`pipeline.finished_runs`), so a
            stopped evaluation, or one with strategies or seeds added, trains only the runs not
            finished with the same inputs; None keeps nothing.

    Returns:
        {"metrics": the metrics.json dict, "predictions": DataFrame strategy, seed, subset, row, y_true, y_pred}.
    """
    _check_tables(data.train, data.val, data.test, data.synthetic)
    add = plan_counts(plan, data.train.class_names)
    _warn_uneven_plan(cfg, add, data.train.class_names)
    names, skipped = _runnable(cfg.strategies, data.synthetic)
    if not names:
        raise DataError(f"no strategy can run: {'; '.join(f'{n}: {r}' for n, r in skipped.items())}")
    tables, test = data.tables(), data.test
    balanced_rows = balanced_subsample(test.labels, test.num_classes, cfg.seed) if cfg.balanced_test else None
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    fingerprints = {n: data_fingerprint(t) for n, t in tables.items()}
    device = resolve_device(cfg.device)
    finished = None if runs_dir is None else _finished_runs(runs_dir, cfg, fingerprints, add, device)
    shared = {"cfg": cfg, "tables": tables, "add": add, "balanced_rows": balanced_rows, "finished": finished}
    workers = resolve_workers(cfg.workers, cfg.cpu_threads, device)
    log.info("evaluate: %d runs in %d process(es) of %s thread(s)", len(names) * len(seeds), workers,
             cfg.cpu_threads or "torch's default")
    start = time.perf_counter()
    judge = _judge(cfg, tables, names, data.synthetic_scores, progress, finished)
    judge_seconds = time.perf_counter() - start
    with Workers(workers, cfg.cpu_threads, shared) as pool:
        report, chosen = _choose_mix(cfg, tables, names, data.synthetic_scores, pool, judge, progress)
        run = pool.map if mapper is None else (lambda fn, units: mapper(functools.partial(fn, shared), units))
        predictions, timing, reused = _run_all(shared, names, seeds, chosen, progress, run)
    metrics = {
        **_header(cfg, tables, add, seeds),
        **metrics_from_predictions(predictions, data.train.class_names, cfg.select_by),
        "skipped": skipped,
        "mix_policy": report,
        "data": {n: {"rows": len(t), "sha256": fingerprints[n]} for n, t in tables.items()},
        "reused_runs": reused,
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
