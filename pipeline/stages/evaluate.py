"""Stage `evaluate`: every strategy x seed on the prepared splits and the synthetic release ->
metrics.json + predictions.parquet."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline import atomic
from pipeline.config import Config
from pipeline.evaluate import EvalData, evaluate as run
from pipeline.results import write_results
from pipeline.stages.files import SPLITS, progress, read_prepared
from pipeline.stages.plan import read_plan
from pipeline.stages.synthetic import filter_stats, read_synthetic

log = logging.getLogger("augment")

# under paths.reports: each finished classifier run (pipeline.finished_runs), so a stopped evaluate resumes
RUNS_DIR = "runs"


def evaluate(cfg: Config, mapper=None) -> dict:
    """Stage `evaluate`: every strategy x seed -> `metrics.json` + `predictions.parquet`.

    `mapper(fn, units)` may run the independent (strategy, seed) units elsewhere (Prefect + Dask).
    """
    tables = {split: read_prepared(cfg, split) for split in SPLITS}
    synthetic, scores = read_synthetic(cfg)
    if synthetic is None:
        log.warning("no synthetic dataset at %s: the GAN strategies are skipped", cfg.paths.synthetic)
    data = EvalData(tables["train"], tables["val"], tables["test"], synthetic, scores)
    runs_dir = Path(cfg.paths.reports) / RUNS_DIR if cfg.evaluate.reuse_runs else None
    result = run(cfg.evaluate, data, read_plan(cfg), progress=progress(), mapper=mapper, runs_dir=runs_dir)
    stats, rule = filter_stats(cfg) if synthetic is not None else (None, None)
    result["metrics"]["generation_filter"], result["metrics"]["generation_filter_rule"] = stats, rule
    atomic.clean_temporaries(cfg.paths.reports)  # what a killed run left
    write_results(cfg.paths.reports, result)
    gain = result["metrics"].get("gain") or {}
    return {"gain": gain.get("balanced_accuracy"), "baseline": gain.get("baseline")}
