"""Stage `generate`: sample each class's quota (times generate.pool_factor) with the EMA generator
into the synthetic release (Parquet shards, manifest, card), after checking final.pt fits the params."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from pipeline import __version__
from pipeline.config import Config, dump
from pipeline.data import ImageTable, data_fingerprint
from pipeline.device import choose_precision, precision_name, select_device
from pipeline.errors import DataError
from pipeline.gan_checkpoints import load_generator
from pipeline.gan_fingerprint import ADDED_LATER, UNFINGERPRINTED, config_fingerprint
from pipeline.generate import Sampler, ScoreFilter, generate as sample, lowest_score
from pipeline.judge import fit_judge
from pipeline.models.classifiers import class_probability
from pipeline.recipes import filter_on
from pipeline.release import synthetic_columns, write_shards
from pipeline.stages.files import gan_final_path, prepared_path, progress, read_prepared
from pipeline.stages.plan import check_plan_fits, read_plan
from pipeline.stages.recipe import with_recipe

log = logging.getLogger("augment")


def _real_scorer(cfg: Config, train: ImageTable, val: ImageTable):
    """The filter's real-data judges (`judge.JUDGES["filter"]`, generate.filter.judges of them, seeds
    generate.seed, +1, ...), as `scorer(images, labels) -> p(intended class)`: the lowest of their
    probabilities, so a sample passes tau only when every judge puts it in its class."""
    fcfg, seed = cfg.generate.filter, cfg.generate.seed
    scorers = [partial(class_probability, fit_judge("filter", train, val, cfg.evaluate, seed + j, epochs=fcfg.epochs,
                                                    progress=progress()).eval())
               for j in range(fcfg.judges)]
    return scorers[0] if len(scorers) == 1 else partial(lowest_score, scorers)


def check_generator(cfg: Config, path: Path, meta: dict, train: ImageTable) -> None:
    """Refuse a final.pt trained on other classes, image size or data, or with other train_gan params.

    Raises:
        DataError: one line naming what differs; the fix is `augment train-gan` again.
    """
    retrain = "run `augment train-gan` again"
    if list(meta["class_names"]) != list(train.class_names):
        raise DataError(f"{path}: generator was trained on classes {meta['class_names']}, the prepared data has "
                        f"{list(train.class_names)}; {retrain}")
    (c, h, w), (th, tw, tc) = meta["image_shape"], train.image_shape
    if (c, h, w) != (tc, th, tw):
        raise DataError(f"{path}: generator makes {w}x{h} images with {c} channel(s), the prepared data is "
                        f"{tw}x{th} with {tc}; {retrain}")
    if meta.get("fingerprint") == config_fingerprint(cfg.train_gan, data_fingerprint(train)):
        step = meta.get("step")
        if step is not None and step != cfg.train_gan.steps and not meta.get("stopped_early"):
            raise DataError(f"{path}: trained for {step} steps, train_gan.steps now says {cfg.train_gan.steps}; "
                            "run `augment train-gan`")
        return
    # a field a run was trained without (ADDED_LATER) trained at its neutral value
    trained = {**ADDED_LATER, **(meta.get("config") or {})}
    now = cfg.train_gan.model_dump(mode="json")
    changed = [k for k in now if k not in UNFINGERPRINTED and trained.get(k) != now[k]]
    if changed:
        k = changed[0]
        raise DataError(f"{path}: trained with train_gan.{k} = {trained.get(k)!r}, the params now say "
                        f"{now[k]!r}; {retrain}")
    raise DataError(f"{path}: trained on other images than {prepared_path(cfg, 'train')} holds now; {retrain}")


def generate(cfg: Config) -> dict:
    """Stage `generate`: sample each class's quota with the EMA generator into Parquet shards."""
    quota = read_plan(cfg)
    path = gan_final_path(cfg)
    if not path.is_file():
        raise DataError(f"{path}: not found; run `augment train-gan` first")
    device = select_device(cfg.train_gan.device)
    G, meta = load_generator(path, device)
    train = read_prepared(cfg, "train")
    names = list(train.class_names)
    cfg = with_recipe(cfg)  # the values final.pt was trained with, recorded in the manifest's params
    check_generator(cfg, path, meta, train)
    check_plan_fits(cfg, {c: n for c, n in quota.items() if isinstance(n, int) and n > 0}, train.image_shape)
    # unknown classes are left to the sampler's check, which names the valid ones
    untrained = [c for c, n in quota.items() if n and c in names and c not in meta.get("train_classes", names)]
    if untrained:
        raise DataError(
            f"{path}: the plan asks for classes {untrained} that the GAN was not trained on "
            "(train_gan.classes); add them there or leave them out of plan.sampling_strategy"
        )
    fcfg = cfg.generate.filter
    filtering = filter_on(fcfg.enabled, cfg.train_gan.recipe)
    scorer = _real_scorer(cfg, train, read_prepared(cfg, "val")) if filtering else None
    stats: dict = {}
    dtype = choose_precision(cfg.generate.precision, device)
    images, labels, seeds, scores = sample(
        Sampler(G, meta, cfg.generate.seed, device, dtype, scorer=scorer),
        {c: n * cfg.generate.pool_factor for c, n in quota.items()}, cfg.generate.batch_size,
        ScoreFilter(fcfg.tau if filtering else 0.0, fcfg.max_oversample, fcfg.fill), progress=progress(), stats=stats,
    )
    extra = {"plan": quota, "pool_factor": cfg.generate.pool_factor, "params": dump(cfg), "generator": meta["sha256"], "augment_version": __version__,
             "filter": stats if filtering else None, "precision": precision_name(dtype)}
    columns = synthetic_columns(meta["sha256"], seeds, scores)
    manifest = write_shards(cfg.paths.synthetic, ImageTable(images, labels, names), columns,
                            cfg.generate.shard_size, extra, export_images=cfg.generate.export_images)
    log.info("generated %d images into %s", len(labels), cfg.paths.synthetic)
    return {"rows": int(len(labels)), "files": len(manifest["files"])}
