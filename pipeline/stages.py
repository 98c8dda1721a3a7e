"""One function per pipeline stage: (config) -> files under `config.paths`. The only I/O glue.

The CLI (`augment <stage>`), `dvc.yaml` (which calls the CLI) and the Prefect flow all call these
functions, so each stage has exactly one implementation. Each returns a small JSON-able summary.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.config import Config
from pipeline.data import (
    ImageTable,
    check_classes,
    impose_long_tail,
    long_tail_counts,
    stratified_split,
)
from pipeline.errors import DataError
from pipeline.plan import plan_quota
from pipeline.sources import ImageSpec, read_source

log = logging.getLogger("augment")

SPLITS = ("train", "val", "test")
_PROGRESS = True


def set_progress(enabled: bool) -> None:
    """Show (default) or hide progress bars in long stages."""
    global _PROGRESS
    _PROGRESS = enabled


def prepared_path(cfg: Config, split: str) -> Path:
    return Path(cfg.paths.prepared) / f"{split}.parquet"


def counts_path(cfg: Config) -> Path:
    return Path(cfg.paths.prepared) / "class_counts.json"


def read_prepared(cfg: Config, split: str) -> ImageTable:
    """A prepared split; a clear error if `augment prepare` has not run."""
    from pipeline.shards import read_parquet

    path = prepared_path(cfg, split)
    if not path.is_file():
        raise DataError(f"{path}: not found; run `augment prepare` first")
    return read_parquet(path)


def _val_profile(target: list[int], val_fraction: float, available: np.ndarray) -> list[int]:
    """The long-tail profile scaled to the validation split (at least one image per class)."""
    scale = val_fraction / (1.0 - val_fraction)
    return [int(min(n, max(1, round(t * scale)))) for t, n in zip(target, available)]


def split_and_profile(cfg: Config, pool: ImageTable) -> tuple[ImageTable, ImageTable]:
    """Split `pool` into (train, val); impose the long-tail profile on both, train getting exact counts.

    The validation split is taken first, so the profile's counts are the training set's counts
    (rarest class 40 for `deepsmote`), and validation follows the same shape scaled by
    val_fraction / (1 - val_fraction): model choice sees the imbalance users have.
    """
    lt = cfg.data.long_tail
    train, val = stratified_split(pool, cfg.data.val_fraction, cfg.data.split_seed)
    if lt.profile == "none":
        return train, val
    target = long_tail_counts(train.counts(), lt.profile, lt.ratio, lt.counts)
    train = impose_long_tail(train, target, lt.seed)
    if len(val):
        val = impose_long_tail(val, _val_profile(target, cfg.data.val_fraction, val.counts()), lt.seed + 1)
    return train, val


def prepare(cfg: Config) -> dict:
    """Stage `prepare`: read and check the source, split, impose the profile, write Parquet + counts."""
    from pipeline.shards import write_parquet

    spec = ImageSpec(cfg.data.image_size, cfg.data.channels, cfg.data.resize)
    source = read_source(cfg.data.source, spec)
    check_classes(source.train, f"{cfg.data.source} (train)")
    pool, test = source.train, source.test
    if test is None:
        pool, test = stratified_split(pool, cfg.data.test_fraction, cfg.data.split_seed + 1000)
        log.info("source has no test set: held out %d images (data.test_fraction=%s)", len(test), cfg.data.test_fraction)
    if test.image_shape != pool.image_shape:
        raise DataError(
            f"{cfg.data.source}: test images are {test.image_shape}, train images {pool.image_shape}; "
            "set data.image_size and data.channels to bring them to one shape"
        )
    train, val = split_and_profile(cfg, pool)
    check_classes(train, f"{cfg.data.source} (train after profile)")
    tables = {"train": train, "val": val, "test": test}
    files = {split: write_parquet(prepared_path(cfg, split), t) for split, t in tables.items()}
    summary = {
        "source": source.description,
        "class_names": list(train.class_names),
        "image_shape": list(train.image_shape),
        "counts": {split: t.counts_by_name() for split, t in tables.items()},
        "files": {split: {"rows": f["rows"], "sha256": f["sha256"]} for split, f in files.items()},
    }
    io.write_json(counts_path(cfg), summary)
    log.info("prepared %s: train %d, val %d, test %d images of shape %s",
             source.description, len(train), len(val), len(test), train.image_shape)
    return summary


def read_counts(cfg: Config) -> dict:
    path = counts_path(cfg)
    if not path.is_file():
        raise DataError(f"{path}: not found; run `augment prepare` first")
    return json.loads(path.read_text(encoding="utf-8"))


def plan(cfg: Config) -> dict[str, int]:
    """Stage `plan`: class counts + sampling_strategy -> `plan.json` {class: n_to_add}."""
    counts = read_counts(cfg)["counts"]["train"]
    try:
        quota = plan_quota(counts, cfg.plan.sampling_strategy)
    except ValueError as e:
        raise DataError(f"plan.sampling_strategy: {e}") from None
    io.write_json(cfg.paths.plan, quota)
    log.info("plan: add %d images in total", sum(quota.values()))
    return quota


def read_plan(cfg: Config) -> dict[str, int]:
    path = Path(cfg.paths.plan)
    if not path.is_file():
        raise DataError(f"{path}: not found; run `augment plan` first")
    return json.loads(path.read_text(encoding="utf-8"))
