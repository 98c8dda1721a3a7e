"""GAN recipes: the `train_gan` settings the benchmarks measured best, chosen from the data.

`train_gan.recipe: auto` (the default) picks a recipe by the prepared images' size and channels
(`choose`); `resolve` fills in its settings wherever params.yaml or `--set` gave no value, so an
explicit value always wins. The stages resolve once they have the prepared data (`pipeline.stages.recipe.with_recipe`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ConfigError

AUTO = "auto"
DIFFAUG = "color,translation,cutout"
# recipe name -> the train_gan values it sets; each measured with sngan (BENCHMARKS.md, the result file named)
RECIPES: dict[str, dict[str, Any]] = {
    # 8x8 digits (the demo); it also beat small_gray on 16x16 USPS-LT (usps_lt_demo_recipe.json: class
    # consistency 0.995 vs 0.947, `gan` alone 91.42% vs 88.43%). Mode seeking on the 8x8 demo: FID 2.1
    # vs 2.6 but consistency 0.976 vs 0.995, and the demo's GAN strategy fell behind: not taken
    "demo": {"width": 32, "aux_weight": 0.0, "diffaug": "", "steps": 2000},
    # grayscale above 8x8 up to 16x16: the demo settings with mode seeking. On USPS-LT (usps_lt_ms.json vs
    # usps_lt_diverse_gan.json): FID 2.6 vs 10.8, intra-FID 13.6 vs 39.3, recall 0.58 vs 0.41, consistency
    # 0.981 vs 0.994; downstream (30 seeds) gan_la_real_prior+augment +0.40 points vs logit_adjust+augment
    # (CI +0.04..+0.77), +0.08 over the demo recipe's GAN on the same seeds (CI -0.09..+0.25; usps_lt_shipped_seeds30.json)
    "tiny_gray": {"width": 32, "aux_weight": 0.0, "diffaug": "", "steps": 2000, "ms_weight": 0.3},
    # 28x28 grayscale: the MNIST-LT recipe (mnist_lt.json: class consistency 0.997, FID 3.5), with mode
    # seeking and a stronger class loss: in time_to_quality_mnist_lt.json every class reached the
    # referee's agreement 0.98 and recall 0.6 in 325 s vs 487 s without, recall 0.7 at 576 s (never
    # without); worst-class recall still rises at 12,000 steps there. Downstream (mnist_lt_diverse_gan.json,
    # 5 seeds, classifiers at 6 epochs): gan_la_real_prior 97.41% vs mixup_drw 96.86%, CI above 0; at the
    # default 15 epochs (mnist_lt_epochs15.json) 97.87% vs logit_adjust+augment 97.93%, no gain
    "small_gray": {"width": 16, "aux_weight": 1.5, "ms_weight": 0.3, "diffaug": DIFFAUG, "steps": 12000},
    # 32x32 colour: the GTSRB-LT settings (gtsrb_lt.json: class consistency 0.392 at 4000 steps, vs 0.130
    # at 2500 in gtsrb.json and 0.090 without the class head in gtsrb_lt_no_class_head.json), with
    # classifier guidance and mode seeking: on GTSRB natural (gtsrb_guide_ms.json vs gtsrb_strong.json,
    # the same 5 seeds) consistency 0.393 vs 0.156, FID 401 vs 682, 4 vs 11 of 43 classes collapsed,
    # gan_la_real_prior +1.03 points (CI +0.33..+1.73); guidance alone collapsed 41 classes. On GTSRB-LT
    # (gtsrb_lt_guide_ms.json) recall 0.41 vs 0.04, no class collapsed, but gan_la_real_prior -4.57 (CI -9.50..+0.36).
    # 13,000 steps, not 4,000: referee agreement 0.94 vs 0.57 (time_to_quality_gtsrb_shipped.json); on GTSRB
    # natural (gtsrb_steps13000.json vs gtsrb_filter_only.json) the filter passed 64% of the tries vs 12%,
    # consistency of the kept set 0.83 vs 0.51, FID 196 vs 340, no class collapsed vs 4, downstream
    # gan_mixup_drw_real_prior +0.62 (CI -0.56..+1.81): 29 min of GAN on 2 cores instead of 9
    "small_color": {"width": 16, "aux_weight": 1.0, "diffaug": DIFFAUG, "steps": 13000, "ms_weight": 0.3,
                    "guide_weight": 1.0},
    # the train_gan field defaults, nothing chosen
    "none": {},
}
# recipes whose generated sets `generate.filter.enabled: auto` filters: on the shipped GTSRB-LT GAN, keeping
# only the samples the filter judge put in their class (p >= 0.9, 10x tries, fill false: 1,827 of 6,040 rows)
# raised gan_la_real_prior by 5.36 points (CI +3.28..+7.44; gtsrb_lt_filter_only.json vs gtsrb_lt_guide_ms.json),
# and on GTSRB natural by +0.24 (CI -1.44..+1.92, gtsrb_filter_only.json); the gray recipes' samples are
# class-consistent (>= 0.98), so there the filter would only cost a judge's training
FILTERED_RECIPES = ("small_color",)


def filter_on(enabled: bool | str, recipe: str) -> bool:
    """Whether `generate` filters: `generate.filter.enabled` as given, or for `auto` whether the
    resolved train_gan recipe is one of FILTERED_RECIPES."""
    return recipe in FILTERED_RECIPES if enabled == AUTO else bool(enabled)


# the largest side the demo recipe is chosen for (the 8x8 demo digits), and tiny_gray's (USPS, 16x16)
DEMO_MAX_SIDE = 8
TINY_MAX_SIDE = 16
# the architecture every recipe was measured with
RECIPE_ARCH = "sngan"
# archs the recipes apply to: sngan, and sngan_hier (sngan with another generator conditioning),
# which benchmarks/gan_ablation.py compares with sngan under the same recipe
RECIPE_ARCHS = (RECIPE_ARCH, "sngan_hier")


@dataclass(frozen=True)
class Choice:
    """What `resolve` did: the recipe applied, why, what it set, and what explicit values kept."""

    asked: str  # train_gan.recipe as given
    name: str  # the recipe applied (a key of RECIPES)
    reason: str
    applied: dict[str, Any] = field(default_factory=dict)
    kept: dict[str, Any] = field(default_factory=dict)  # explicit values the recipe would have set

    def line(self) -> str:
        """One log line: `train_gan recipe auto -> small_gray (...): width=16 ...; kept steps=500`."""
        head = self.name if self.asked == self.name else f"{self.asked} -> {self.name}"
        sets = _pairs(self.applied) or "nothing"
        kept = f"; params.yaml/--set keep {_pairs(self.kept)}" if self.kept else ""
        return f"train_gan recipe {head} ({self.reason}): sets {sets}{kept}"


def _pairs(values: dict[str, Any]) -> str:
    """`width=16 diffaug=""` (an empty string shown as such)."""
    return " ".join(f"{k}={v}" if v != "" else f'{k}=""' for k, v in values.items())


def describe_data(image_shape: list[int] | tuple[int, ...], counts: dict[str, int] | None) -> str:
    """`28x28x1 images, 10 classes of 32..5923 images`."""
    h, w, c = image_shape
    text = f"{w}x{h}x{c} images"
    if counts:
        text += f", {len(counts)} classes of {min(counts.values())}..{max(counts.values())} images"
    return text


def choose(image_shape: list[int] | tuple[int, ...], counts: dict[str, int] | None = None,
           arch: str = RECIPE_ARCH) -> tuple[str, str]:
    """The recipe `auto` picks for images of `image_shape` (H, W, C), and why.

    Colour images get small_color (GTSRB), grayscale up to 8x8 the demo recipe, up to 16x16
    tiny_gray (USPS), larger grayscale small_gray (MNIST). The class counts are named in the reason
    only: no benchmark measured a count-dependent setting. Archs outside RECIPE_ARCHS get none (the recipes were measured with sngan).
    """
    data = describe_data(image_shape, counts)
    if arch not in RECIPE_ARCHS:
        return "none", f"{data}; arch {arch!r}: the recipes were measured with {RECIPE_ARCH}"
    h, w, c = image_shape
    if c == 3:
        return "small_color", data
    if max(h, w) <= DEMO_MAX_SIDE:
        return "demo", data
    if max(h, w) <= TINY_MAX_SIDE:
        return "tiny_gray", data
    return "small_gray", data


def resolve(section, image_shape: list[int] | tuple[int, ...] | None = None,
            counts: dict[str, int] | None = None):
    """`section` (a TrainGanConfig) with its recipe's values where none was given explicitly.

    "Explicitly given" is pydantic's `model_fields_set`: the keys params.yaml or `--set` named. The
    result names the applied recipe in `recipe`, so resolving it again changes nothing.

    Args:
        section: the `train_gan` section as the config read it.
        image_shape: (H, W, C) of the prepared training images; needed for `auto` only.
        counts: {class name: training images}, for the log line.

    Returns:
        (the resolved TrainGanConfig, a Choice saying what was applied).

    Raises:
        ConfigError: `auto` without an image shape.
    """
    asked = section.recipe
    if asked == AUTO:
        if image_shape is None:
            raise ConfigError("train_gan.recipe = 'auto' is resolved from the prepared data; run `augment prepare`")
        name, reason = choose(image_shape, counts, section.arch)
    else:
        name = asked
        reason = "named in train_gan.recipe" + (f"; {describe_data(image_shape, counts)}" if image_shape else "")
    given = section.model_fields_set - {"recipe"}
    settings = RECIPES[name]
    applied = {k: v for k, v in settings.items() if k not in given}
    kept = {k: getattr(section, k) for k in settings if k in given and getattr(section, k) != settings[k]}
    values = {k: getattr(section, k) for k in given} | applied | {"recipe": name}
    return type(section).model_validate(values), Choice(asked, name, reason, applied, kept)
