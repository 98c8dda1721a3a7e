"""Stage `report`: report.md, a self-contained report.html, figures and the plot CSVs."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.config import Config, dump
from pipeline.errors import DataError
from pipeline.report import write_report
from pipeline.results import read_results
from pipeline.stages.files import read_prepared
from pipeline.stages.recipe import with_recipe
from pipeline.stages.synthetic import read_synthetic

log = logging.getLogger("augment")


def report(cfg: Config) -> dict:
    """Stage `report`: report.md, self-contained report.html, figures and plot CSVs."""
    out = Path(cfg.paths.reports)
    if not (out / "metrics.json").is_file():
        raise DataError(f"{out / 'metrics.json'}: not found; run `augment evaluate` first")
    results = read_results(out)
    gan_dir = Path(cfg.paths.gan)
    paths = write_report(out, results["metrics"], results["predictions"], train=read_prepared(cfg, "train"),
                         synthetic=read_synthetic(cfg)[0], gan_dir=gan_dir if gan_dir.is_dir() else None,
                         params=dump(with_recipe(cfg)))
    log.info("report: %s", out / "report.html")
    return {"files": [str(p) for p in paths]}
