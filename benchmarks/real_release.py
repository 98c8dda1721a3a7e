"""A perfect generator's release: the synthetic dataset filled with real training images that the
long-tail profile left out, in place of the GAN's samples.

`outcome.py --synthetic real` runs the pipeline with this release instead of train-gan + generate.
Every strategy then draws the same number of rows per class as with the GAN, so the run measures
the ceiling of what any generator could add under that classifier, those strategies and that plan:
when even real images add less than a goal asks, no GAN can meet it that way.

The images come from the training pool before the profile (`prepare.split_pool`), less every image
whose bytes equal a prepared training or validation image; validation and test images are never used.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np

from pipeline import __version__
from pipeline.config import Config, dump
from pipeline.data import ImageTable
from pipeline.errors import DataError
from pipeline.release import synthetic_columns, write_shards
from pipeline.stages.files import read_prepared
from pipeline.stages.plan import read_plan
from pipeline.stages.prepare import read_pool, split_pool

log = logging.getLogger("augment")

# the release's `generator` column and manifest entry: no final.pt made these rows
SOURCE_NAME = "real images the long-tail profile left out"


def _digests(images: np.ndarray) -> np.ndarray:
    return np.array([hashlib.sha256(img.tobytes()).hexdigest() for img in images])


def left_out(cfg: Config) -> ImageTable:
    """The pre-profile training split's images that are in neither prepared train nor prepared val."""
    _, pool, _ = read_pool(cfg)
    before, _ = split_pool(cfg, pool)
    used = set(_digests(read_prepared(cfg, "train").images)) | set(_digests(read_prepared(cfg, "val").images))
    keep = np.flatnonzero(~np.isin(_digests(before.images), list(used)))
    return before.subset(keep)


def draw(spare: ImageTable, quota: dict[str, int], seed: int) -> tuple[ImageTable, dict[str, list[int]]]:
    """quota[c] images of each class c drawn without replacement (seeded), in class order, and the
    classes that had fewer left-out images than their quota: {class: [asked, drawn]}. Those get
    every image they have (the fresh-pool strategies then repeat them sooner than a GAN's pool),
    and a warning says so.
    """
    rng = np.random.default_rng(seed)
    names = list(spare.class_names)
    picks, short = [], {}
    for name, n in quota.items():
        if n <= 0:
            continue
        idx = np.flatnonzero(spare.labels == names.index(name))
        if len(idx) < n:
            short[name] = [int(n), int(len(idx))]
        picks.append(np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False)))
    if picks and not sum(len(p) for p in picks):
        raise DataError(f"the long-tail profile left out no image of the classes the plan fills ({', '.join(short)}); "
                        "--synthetic real needs a profile that leaves images out (deepsmote, rho=<ratio>, "
                        "natural=<fraction>)")
    if short:
        log.warning("fewer left-out real images than the release asks, all of them used: %s",
                    ", ".join(f"{c} {had} of {asked}" for c, (asked, had) in short.items()))
    return spare.subset(np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)), short


def write_real_release(cfg: Config) -> dict:
    """Write `paths.synthetic` from left-out real images: the plan's count times
    generate.pool_factor per class (or all a class has: the manifest's "short"), scores unset (NaN),
    as `augment generate` lays a release out."""
    quota = read_plan(cfg)
    table, short = draw(left_out(cfg), {c: n * cfg.generate.pool_factor for c, n in quota.items()}, cfg.generate.seed)
    n = len(table.labels)
    columns = synthetic_columns(SOURCE_NAME, np.arange(n, dtype=np.int64), np.full(n, np.nan, dtype=np.float32))
    extra = {"plan": quota, "pool_factor": cfg.generate.pool_factor, "params": dump(cfg), "generator": SOURCE_NAME,
             "augment_version": __version__, "filter": None, "precision": None, "short": short}
    manifest = write_shards(cfg.paths.synthetic, table, columns, cfg.generate.shard_size, extra)
    log.info("wrote %d left-out real images into %s in place of synthetic ones", n, cfg.paths.synthetic)
    return {"rows": n, "files": len(manifest["files"]), "short": short}
