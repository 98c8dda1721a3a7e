"""Stage `train_gan`: fit the class-conditional GAN on the prepared training split."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.config import Config
from pipeline.gan import train_gan as fit
from pipeline.stages.files import progress, read_prepared
from pipeline.stages.recipe import with_recipe
from pipeline.threads import choose_threads, cpu_threads

log = logging.getLogger("augment")


def train_gan(cfg: Config) -> dict:
    """Stage `train_gan`: fit the class-conditional GAN on the prepared training split, with
    `train_gan.cpu_threads` torch threads (auto: the free cores; None: torch's default), the previous
    count restored after."""
    train = read_prepared(cfg, "train")
    cfg = with_recipe(cfg, announce=True)
    threads = choose_threads(cfg.train_gan.cpu_threads)
    if cfg.train_gan.cpu_threads == "auto":
        log.info("train-gan on %d CPU thread(s) (train_gan.cpu_threads auto: the cores free now)", threads)
    with cpu_threads(threads):
        final = fit(cfg.train_gan, train, Path(cfg.paths.gan), progress=progress())
    return {"final": str(final)}
