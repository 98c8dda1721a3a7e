"""The pipeline's stages, one module each: (config) -> files under `config.paths`. The only I/O glue.

The CLI (`augment <stage>`), `dvc.yaml` (which calls the CLI) and the Prefect flow all call
`stage(name)`, so each stage has exactly one implementation, and running one imports only its module
(dvc.yaml lists that module's import closure as the stage's code deps; tests/test_architecture.py
keeps the two equal). Each stage returns a small JSON-able summary.

    prepare    data.source -> prepared/{train,val,test}.parquet + class_counts.json
    plan       class_counts.json + plan.sampling_strategy -> plan.json
    train_gan  prepared train split -> models/gan/ (checkpoints, final.pt, curves)
    generate   plan.json + final.pt -> synthetic/ (shards, manifest, card)
    evaluate   prepared splits + synthetic/ -> reports/metrics.json + predictions.parquet
    report     metrics.json + predictions -> reports/report.{md,html}, figures/
"""

from __future__ import annotations

import importlib
from typing import Callable

NAMES = ("prepare", "plan", "train_gan", "generate", "evaluate", "report")


def stage(name: str) -> Callable:
    """The function of stage `name` (one of NAMES), importing only that stage's module."""
    if name not in NAMES:
        raise KeyError(f"no stage {name!r}; the stages are {', '.join(NAMES)}")
    return getattr(importlib.import_module(f"{__name__}.{name}"), name)
