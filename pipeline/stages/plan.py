"""Stage `plan`: how many images each class lacks (plan.json), and reading it back checked."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from pipeline import atomic
from pipeline.config import Config
from pipeline.errors import DataError
from pipeline.plan import plan_quota
from pipeline.stages.files import read_counts, read_json

log = logging.getLogger("augment")


def _quota(cfg: Config) -> dict[str, int]:
    """The plan that class_counts.json and plan.sampling_strategy give now."""
    counts = read_counts(cfg)["counts"]["train"]
    try:
        return plan_quota(counts, cfg.plan.sampling_strategy)
    except ValueError as e:
        raise DataError(f"plan.sampling_strategy: {e}") from None


def _available_memory() -> int:
    """Bytes of memory this machine can give now (MemAvailable; else its physical memory)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_plan_fits(cfg: Config, quota: dict[str, int], image_shape: list[int] | tuple[int, ...]) -> None:
    """Refuse a plan whose images cannot be held in memory or written to disk.

    `generate` holds every generated image (uint8 H x W x C, times generate.pool_factor) in
    memory at once, and the shards store each one about that size (PNG without deflate).

    Raises:
        DataError: naming the plan's size, the limit and what to lower.
    """
    n = sum(quota.values()) * getattr(cfg.generate, "pool_factor", 1)
    per_image = int(np.prod([int(d) for d in image_shape]))
    need = n * per_image
    where = Path(cfg.paths.synthetic).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    limits = {"memory available": _available_memory(), f"free disk at {where}": shutil.disk_usage(where).free}
    for what, have in limits.items():
        if need > have:
            raise DataError(f"plan.sampling_strategy = {cfg.plan.sampling_strategy!r}: the plan adds {n:,} images "
                            f"of {per_image} bytes ({need / 2**30:,.1f} GiB), more than the {what} "
                            f"({have / 2**30:,.1f} GiB); lower plan.sampling_strategy")


def plan(cfg: Config) -> dict[str, int]:
    """Stage `plan`: class counts + sampling_strategy -> `plan.json` {class: n_to_add}."""
    quota = _quota(cfg)
    check_plan_fits(cfg, quota, read_counts(cfg)["image_shape"])
    atomic.write_json(cfg.paths.plan, quota)
    log.info("plan: add %d images in total", sum(quota.values()))
    return quota


def read_plan(cfg: Config) -> dict[str, int]:
    """plan.json, refused when it is not the plan the prepared counts and plan params give now."""
    path = Path(cfg.paths.plan)
    if not path.is_file():
        raise DataError(f"{path}: not found; run `augment plan` first")
    quota = read_json(path, "augment plan")
    try:
        now = _quota(cfg)
    except DataError:
        return quota  # the plan stage itself will say what is wrong
    well_formed = set(quota) <= set(now) and all(type(n) is int and n >= 0 for n in quota.values())
    if well_formed and quota != now:  # a malformed plan gets its own error where it is used
        c = next((c for c in {**now, **quota} if quota.get(c) != now.get(c)), None)
        raise DataError(f"{path}: adds {quota.get(c)!r} images of class {c!r}, the prepared counts and "
                        f"plan.sampling_strategy now give {now.get(c)!r}; run `augment plan`")
    return quota
