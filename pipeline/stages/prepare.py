"""Stage `prepare`: read and check the source, split it, impose the long-tail profile, write the splits."""

from __future__ import annotations

import logging

import numpy as np

from pipeline import atomic
from pipeline.config import Config
from pipeline.data import ImageTable, check_classes, impose_long_tail, long_tail_counts, stratified_split
from pipeline.errors import DataError
from pipeline.sources import ImageSpec, Source, read_source
from pipeline.stages.files import counts_path, prepared_path
from pipeline.tables import write_parquet

log = logging.getLogger("augment")


def _val_profile(target: list[int], val_fraction: float, available: np.ndarray) -> list[int]:
    """The long-tail profile scaled to the validation split (at least one image per class)."""
    scale = val_fraction / (1.0 - val_fraction)
    return [int(min(n, max(1, round(t * scale)))) for t, n in zip(target, available)]


def split_pool(cfg: Config, pool: ImageTable) -> tuple[ImageTable, ImageTable]:
    """(train, val) of the training pool before the long-tail profile: the images the profile
    chooses from (benchmarks read the ones it leaves out as a perfect generator's samples)."""
    return stratified_split(pool, cfg.data.val_fraction, cfg.data.split_seed)


def read_pool(cfg: Config) -> tuple[Source, ImageTable, ImageTable]:
    """(the source as read, the training pool, the test split): the test split is the source's own
    or, when it has none, held out of the pool by class (data.test_fraction)."""
    spec = ImageSpec(cfg.data.image_size, cfg.data.channels, cfg.data.resize)
    source = read_source(cfg.data.source, spec)
    check_classes(source.train, f"{cfg.data.source} (train)", source.empty_hint)
    pool, test = source.train, source.test
    if test is None:
        pool, test = stratified_split(pool, cfg.data.test_fraction, cfg.data.split_seed + 1000)
        log.info("source has no test set: held out %d images (data.test_fraction=%s)", len(test), cfg.data.test_fraction)
    return source, pool, test


def split_and_profile(cfg: Config, pool: ImageTable) -> tuple[ImageTable, ImageTable]:
    """Split `pool` into (train, val); impose the long-tail profile on both, train getting exact counts.

    The validation split is taken first, so the profile's counts are the training set's counts
    (rarest class 40 for `deepsmote`), and validation follows the same shape scaled by
    val_fraction / (1 - val_fraction): model choice sees the imbalance users have.
    """
    lt, profile = cfg.data.long_tail, cfg.data.profile()
    train, val = split_pool(cfg, pool)
    if profile == "none":
        return train, val
    target = long_tail_counts(train.counts(), profile, lt.ratio, lt.counts, lt.fraction)
    train = impose_long_tail(train, target, lt.seed)
    if len(val):
        val = impose_long_tail(val, _val_profile(target, cfg.data.val_fraction, val.counts()), lt.seed + 1)
    return train, val


def prepare(cfg: Config) -> dict:
    """Stage `prepare`: read and check the source, split, impose the profile, write Parquet + counts."""
    source, pool, test = read_pool(cfg)
    if test.image_shape != pool.image_shape:
        raise DataError(
            f"{cfg.data.source}: test images are {test.image_shape}, train images {pool.image_shape}; "
            "set data.image_size and data.channels to bring them to one shape"
        )
    train, val = split_and_profile(cfg, pool)
    check_classes(train, f"{cfg.data.source} (train after profile)", source.empty_hint)
    tables = {"train": train, "val": val, "test": test}
    atomic.clean_temporaries(cfg.paths.prepared)  # what a killed run left: not part of the output
    # all written first, then renamed together (class_counts.json last): a full disk or a kill
    # never leaves a new train split beside an old test split and old counts
    with atomic.atomic_paths([*(prepared_path(cfg, split) for split in tables), counts_path(cfg)]) as tmps:
        files = {split: write_parquet(tmp, t) for tmp, (split, t) in zip(tmps, tables.items())}
        summary = {
            "data": cfg.data.model_dump(mode="json"),  # what later stages check they read
            "source": source.description,
            "class_names": list(train.class_names),
            "image_shape": list(train.image_shape),
            "counts": {split: t.counts_by_name() for split, t in tables.items()},
            "files": {split: {"rows": f["rows"], "sha256": f["sha256"]} for split, f in files.items()},
        }
        atomic.write_json(tmps[-1], summary)
    log.info("prepared %s: train %d, val %d, test %d images of shape %s",
             source.description, len(train), len(val), len(test), train.image_shape)
    return summary
