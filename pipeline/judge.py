"""The real-data judges: classifiers trained on real images only, that label, score or embed
generated ones. Every judge is `training.train_classifier` under one of the recipes in `JUDGES`,
keyed by its use (the generation filter, GAN quality tracking, GAN guidance, evaluation, the
benchmark referee), so the five recipes are written once, here, side by side; `fit_judge(use, ...)` trains one and
`cached_judge` keeps one on disk for what it was trained from (`judge_key`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from pipeline import atomic
from pipeline.classifier_recipe import TrainingSet, inverse_frequency_weights
from pipeline.config import EvaluateConfig
from pipeline.data import ImageTable, data_fingerprint
from pipeline.device import prepare_module
from pipeline.models.classifiers import build_classifier
from pipeline.training import train_classifier

log = logging.getLogger("augment")

JUDGE_FORMAT = "augment-gan-judge/1"


@dataclass(frozen=True)
class JudgeRecipe:
    """How one use's judge trains, on top of the evaluate-section config its caller passes.

    Attributes:
        use: who asks for it, and on what data.
        settings: EvaluateConfig fields the recipe fixes (classifier, batch_size, lr, epochs).
        class_weighted: inverse-frequency class weights in the loss (`inverse_frequency_weights`).
        augment: classic augmentation of every batch (`training.augment_batch`).
    """

    use: str
    settings: dict[str, Any] = field(default_factory=dict)
    class_weighted: bool = False
    augment: bool = False


_TRACKING = JudgeRecipe(
    "train_gan.track_quality: labels EMA samples during GAN training; the evaluate defaults' small_cnn "
    "for train_gan.judge_epochs on the GAN's training images (no validation: the last epoch), "
    "cached in judge.pt per judge_key (images, seed, epochs, device)",
    {"batch_size": 64, "lr": 2e-3}, class_weighted=True, augment=True,
)

# The recipes differ on purpose (the guide's is the tracker's, trained with another seed), and each
# one's outputs depend on it: the filter's scores choose the generated images (shards), the tracker's
# agreement decides early stopping (final.pt, quality.csv), the guide steers G (final.pt), the
# evaluation judge gives gan_policy's scores and metrics.json gan_quality, and the referee gives the
# benchmarks' class consistency.
JUDGES: dict[str, JudgeRecipe] = {
    "filter": JudgeRecipe(
        "generate.filter: p(intended class) of each candidate image; the evaluate classifier and settings "
        "for generate.filter.epochs, plain cross-entropy, chosen on the real validation split",
    ),
    "tracking": _TRACKING,
    # the tracking judge's recipe: the callers give it its own seed and epochs
    "guide": replace(_TRACKING, use="train_gan.guide_weight: the frozen classifier whose cross-entropy on the "
                     "samples G also minimises; the tracking judge's recipe with its own seed, for "
                     "train_gan.guide_epochs, cached in guide.pt per judge_key"),
    "evaluate": JudgeRecipe(
        "evaluate: scores unscored synthetic images for gan_policy and embeds images for gan_quality; "
        "small_cnn (its penultimate layer embeds) with the evaluate settings, chosen on validation",
        {"classifier": "small_cnn"}, class_weighted=True,
    ),
    "referee": JudgeRecipe(
        "benchmarks/speed.py: the referee of class consistency, trained on the full real training set "
        "(5,000 images held out to pick its epoch), cached in the workdir per data and recipe",
        {"epochs": 12, "batch_size": 128, "lr": 2e-3}, augment=True,
    ),
}


def fit_judge(use: str, train: ImageTable, val: ImageTable, cfg: EvaluateConfig, seed: int, *,
              epochs: int | None = None, progress: bool = False) -> nn.Module:
    """The judge of `use` (a key of `JUDGES`) trained on `train`, chosen on `val` (may be empty).

    Args:
        use: which recipe.
        train, val: real images only.
        cfg: the evaluate-section settings the recipe starts from (device, threads, precision, ...).
        seed: seeds the weights, batches and augmentation.
        epochs: the caller's epoch count (generate.filter.epochs, train_gan.judge_epochs), else the
            recipe's or `cfg.epochs`.
        progress: show a bar over epochs.
    """
    if use not in JUDGES:
        raise ValueError(f"unknown judge use {use!r}; known: {', '.join(JUDGES)}")
    recipe = JUDGES[use]
    update = {**recipe.settings, **({"epochs": epochs} if epochs is not None else {})}
    judge_cfg = cfg.model_copy(update=update) if update else cfg
    weight = inverse_frequency_weights(train.counts()) if recipe.class_weighted else None
    return train_classifier(TrainingSet(train, class_weight=weight, augment=recipe.augment), val, judge_cfg, seed,
                            progress=progress)


def judge_key(use: str, table: ImageTable, seed: int, epochs: int, device: str) -> str:
    """What a judge of `use` trained by `fit_judge` on `table` depends on, as a digest for
    `cached_judge`: its recipe, the images, the seed, the epochs and the device. Not the GAN's other
    params, so a run with, say, another step count or mode-seeking weight reuses the judge."""
    recipe = {k: v for k, v in asdict(JUDGES[use]).items() if k != "use"}
    doc = {"use": use, "recipe": recipe, "data": data_fingerprint(table), "seed": seed, "epochs": epochs,
           "device": device}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def cached_judge(path: Path, fingerprint: str, table: ImageTable, train: Callable[[], nn.Module]) -> nn.Module:
    """A small-CNN judge for `table`'s shape and classes: loaded from `path` when it was saved for
    the same `fingerprint`, else made by `train()` and saved there atomically. In eval mode, on the CPU
    when loaded (callers move it). A loaded judge is in channels_last, as `train_classifier` leaves
    a trained one: in NCHW its logits differ in the last float bits, and a resumed run must score
    (or, for the GAN's guide, learn) exactly as the run that trained it."""
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved.get("format") == JUDGE_FORMAT and saved.get("fingerprint") == fingerprint:
                h, w, c = table.image_shape
                judge = build_classifier("small_cnn", (c, h, w), table.num_classes, torch.Generator().manual_seed(0))
                judge.load_state_dict(saved["state"])
                return prepare_module(judge, torch.device("cpu")).eval()
        except Exception as e:  # noqa: BLE001 - an unreadable judge is simply retrained
            log.warning("%s: unreadable (%s); training the judge again", path, e.__class__.__name__)
    judge = train()
    with atomic.atomic_path(path) as tmp:
        torch.save({"format": JUDGE_FORMAT, "fingerprint": fingerprint,
                    "state": {k: v.cpu() for k, v in judge.state_dict().items()}}, tmp)
    return judge.eval()
