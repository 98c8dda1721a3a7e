"""`train_gan.recipe` resolved against the prepared data: what train_gan, generate, report and
`augment show-params` see."""

from __future__ import annotations

import logging

from pipeline.config import Config, dump
from pipeline.errors import DataError
from pipeline.recipes import AUTO, RECIPES, resolve
from pipeline.stages.files import counts_path, read_counts

log = logging.getLogger("augment")


def with_recipe(cfg: Config, announce: bool = False) -> Config:
    """`cfg` with `train_gan.recipe` resolved against the prepared data (class_counts.json): the
    recipe's values wherever params.yaml and --set gave none, `recipe` naming the one applied.
    `announce` logs the choice in one line. Resolving a resolved config changes nothing."""
    shape = counts = None
    if cfg.train_gan.recipe == AUTO or announce:
        summary = read_counts(cfg)
        shape, counts = summary.get("image_shape"), summary["counts"]["train"]
        if shape is None:  # files of augment before image_shape was recorded
            raise DataError(f"{counts_path(cfg)}: records no image_shape; run `augment prepare` again")
    section, choice = resolve(cfg.train_gan, shape, counts)
    if announce:
        log.info("%s", choice.line())
    return cfg.model_copy(update={"train_gan": section})


def shown_params(cfg: Config) -> dict:
    """The params as `augment show-params` prints them: `train_gan.recipe` resolved when the
    prepared data is there; else `auto (resolved after prepare)`, and the keys it will set say so."""
    try:
        return dump(with_recipe(cfg))
    except DataError:  # not prepared, or prepared with other data params: prepare decides
        tree = dump(cfg)
    section = tree["train_gan"]
    section["recipe"] = f"{AUTO} (resolved after prepare)"
    for key in set().union(*RECIPES.values()) - cfg.train_gan.model_fields_set:
        section[key] = "(from the recipe)"
    return tree
