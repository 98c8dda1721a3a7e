"""Typed configuration: `params.yaml` read and validated once, grouped by stage.

`load(path, overrides)` returns a frozen `Config`; every stage takes its section. This module is
the one owner of the params' rules: unknown keys, bad values and every rule across fields (label
smoothing only for bce, a class head for aux_weight...) raise `ConfigError` here, at load time, in
one line naming the key, the bad value and the valid choices. Choices that name an implementation
(arch, loss, augment policy, classifier) are checked against torch-free name lists
(`pipeline.choices`, held equal to the registries that dispatch the calls by a test), recipes and
strategies against their own registries. Nothing changes a loaded config: a derived one (the
resolved recipe) is a new, validated object.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.choices import AUGMENT_OPS, CLASSIFIERS, GAN_ARCHS, LABEL_SMOOTHING_LOSSES, LOSSES
from pipeline.classifier_recipe import SPREADS
from pipeline.recipes import AUTO, RECIPES
from pipeline.strategies import STRATEGIES


class Section(BaseModel):
    """A params group: unknown keys are refused, and a validated section is frozen (a change is a
    new object: `model_copy(update=...)` or `model_validate`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_choice(value: str, valid: Collection[str]) -> str:
    if value not in valid:
        raise ValueError(f"{value!r} is not one of: {', '.join(sorted(valid))}")
    return value


class Paths(Section):
    """Where each stage writes; dvc.yaml reads the same keys through `${paths.*}`."""

    prepared: str = "data/prepared"
    plan: str = "data/plan.json"
    gan: str = "data/models/gan"
    synthetic: str = "data/synthetic"
    reports: str = "data/reports"


# the demo source, which is balanced: `auto` makes it long-tailed (exponential, ratio 10)
DEMO_SOURCE = "digits"


class LongTail(Section):
    """Long-tail profile imposed on the training set (after the val split).

    `auto` (default): `exponential` for the balanced demo source `digits`, `none` for any other
    source, which is the user's own data and keeps its own class counts unless a profile is named.
    """

    profile: Literal["auto", "none", "exponential", "deepsmote", "counts", "fraction"] = "auto"
    ratio: float = Field(10.0, ge=1.0)
    fraction: float = Field(1.0, gt=0.0, le=1.0)  # profile `fraction`: keep this share of every class
    counts: list[int] | None = None
    seed: int = Field(0, ge=0)  # seeds feed numpy's SeedSequence, which takes no negative number

    @field_validator("counts")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(c < 1 for c in v):
            raise ValueError(f"every count must be >= 1, got {v}")
        return v


class DataConfig(Section):
    """Stage `prepare`: the source, its image size, the split and the long-tail profile."""

    def profile(self) -> str:
        """The long-tail profile `prepare` imposes: `long_tail.profile` with `auto` resolved."""
        if self.long_tail.profile != "auto":
            return self.long_tail.profile
        return "exponential" if self.source == DEMO_SOURCE else "none"

    source: str = "digits"
    image_size: int | None = Field(None, ge=4, le=512)
    channels: Literal[1, 3] | None = None
    resize: bool = True
    test_fraction: float = Field(0.3, gt=0.0, lt=1.0)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    split_seed: int = Field(0, ge=0)
    long_tail: LongTail = LongTail()


class PlanConfig(Section):
    """Stage `plan`: imbalanced-learn `sampling_strategy` (str, float, or {class: count})."""

    sampling_strategy: str | int | float | dict[str | int, int] = "auto"

    @field_validator("sampling_strategy", mode="before")
    @classmethod
    def _exponent_form(cls, v: Any) -> Any:
        """`1e4` is a string to YAML 1.1 (no dot): read it as the number it spells (integral: a target count)."""
        if isinstance(v, str) and re.fullmatch(r"[+-]?\d+(\.\d*)?[eE][+-]?\d+", v.strip()):
            x = float(v)
            return int(x) if x.is_integer() and x >= 1 else x
        return v


# the train_gan options an arch must support (`choices.GAN_ARCHS` lists each arch's) -> what the option does
ARCH_NEEDS = {
    "transition_steps": "needs an arch whose conditioning can be blended in",
    "gsr_weight": "regularises class-conditional BatchNorm",
    "embed_noise": "perturbs per-class BatchNorm embeddings",
    "aux_weight": "needs a discriminator with a class head",
}


class TrainGanConfig(Section):
    """Stage `train_gan`: the class-conditional GAN recipe.

    `recipe` (default `auto`: chosen from the prepared data) fills in width, aux_weight, diffaug
    and steps wherever they are not given explicitly (`pipeline.recipes`); the stages resolve it.
    """

    recipe: str = "auto"  # auto | a key of pipeline.recipes.RECIPES (demo, tiny_gray, small_gray, small_color, none)
    arch: str = "sngan"
    size: Literal["light", "base"] = "light"
    width: int | None = Field(None, ge=4)  # overrides the size's base channel width
    loss: str = "hinge"
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    gp_weight: float = Field(10.0, ge=0.0)
    aux_weight: float = Field(0.0, ge=0.0)  # AC-GAN class loss on D (real images) and G (its samples)
    # TAC-GAN (Gong et al. 2019): a twin class head learns the fakes' labels and G maximises its loss,
    # cancelling the AC-GAN loss's pull towards the most typical image of a class
    aux_twin: bool = False
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(64, ge=1)
    z_dim: int = Field(64, ge=1)
    lr_g: float = Field(2e-4, gt=0.0)
    lr_d: float = Field(2e-4, gt=0.0)
    beta1: float = Field(0.0, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    n_dis: int = Field(1, ge=1)
    # LeCam regularisation of D (Tseng et al. 2021) for limited data: weight (0 = off) and the decay
    # of its moving averages of D's real and fake logits
    lecam_weight: float = Field(0.0, ge=0.0)
    lecam_decay: float = Field(0.99, gt=0.0, lt=1.0)
    # transitional conditioning (Shahbazi et al. 2022): unconditional until transition_start, then
    # the class blended in linearly over transition_steps steps; 0 = conditional from the start
    transition_start: int = Field(0, ge=0)
    transition_steps: int = Field(0, ge=0)
    gsr_weight: float = Field(0.0, ge=0.0)  # group spectral regularisation (gSR, Rangwani et al. 2022) of G's cBN; 0 = off
    # noise augmentation of G's class embeddings (NoisyTwins' first half, Rangwani et al. 2023):
    # N(0, embed_noise^2) on each sample's class-conditional gains and biases while G trains; 0 = off
    embed_noise: float = Field(0.0, ge=0.0)
    # mode-seeking regularisation (MSGAN, Mao et al. 2019): the fakes come in pairs of one class,
    # and G also minimises ms_weight / (image distance / noise distance) of each batch's pairs; 0 = off
    ms_weight: float = Field(0.0, ge=0.0)
    guide_weight: float = Field(0.0, ge=0.0)  # classifier guidance (gan_guide.py): G also minimises this x a frozen CNN's CE; 0 = off
    guide_epochs: int = Field(5, ge=1)  # of that CNN, trained first on the GAN's training images
    guide_until: float = Field(1.0, gt=0.0, le=1.0)  # no push once it gives the intended class this probability
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)
    ema_warmup: int = Field(500, ge=0)
    diffaug: str = "color,translation,cutout"
    # ADA (Karras et al. 2020): apply diffaug to each image with a probability that rises while D
    # is too sure of the real images (E[sign D(real)] above this target, 0.6 in the paper); 0 =
    # always apply it. ada_images: images for the probability to go from 0 to 1
    ada_target: float = Field(0.0, ge=0.0, lt=1.0)
    ada_images: int = Field(100_000, ge=1)
    balanced_sampling: bool = True
    classes: list[str] | None = None
    checkpoint_every: int = Field(500, ge=1)
    sample_every: int = Field(500, ge=1)
    track_quality: bool = False  # judge agreement per class of the EMA samples at every sample_every step
    early_stop_patience: int = Field(0, ge=0)  # stop after this many evaluations without a better one; 0 = never
    judge_epochs: int = Field(3, ge=1)  # of the tracking judge (a small CNN on the training images)
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    # torch CPU threads while training: None = torch's default; auto = the cores free at the start
    # (pipeline/threads.py), within OMP_NUM_THREADS / the CPU affinity; a number pins it. The GAN's
    # bytes depend on the count: byte-identical reruns need the same one
    cpu_threads: Annotated[int, Field(ge=1)] | Literal["auto"] | None = None

    @field_validator("recipe")
    @classmethod
    def _recipe(cls, v: str) -> str:
        valid = [AUTO, *RECIPES]
        if v not in valid:
            raise ValueError(f"{v!r} is not one of: {', '.join(valid)}")
        return v

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str) -> str:
        return _check_choice(v, GAN_ARCHS)

    @field_validator("loss")
    @classmethod
    def _loss(cls, v: str) -> str:
        return _check_choice(v, LOSSES)

    @field_validator("classes")
    @classmethod
    def _some_classes(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("list at least one class name, or null for every class")
        return v

    @field_validator("diffaug")
    @classmethod
    def _diffaug(cls, v: str) -> str:
        for part in filter(None, (p.strip() for p in v.split(","))):
            if part not in AUGMENT_OPS:
                raise ValueError(f"policy {part!r} is not one of: {', '.join(sorted(AUGMENT_OPS))}")
        return v

    @model_validator(mode="after")
    def _across_fields(self) -> "TrainGanConfig":
        if self.early_stop_patience > 0 and not self.track_quality:
            raise ValueError("early_stop_patience > 0 needs track_quality: true (stopping is decided by the judge)")
        if self.label_smoothing > 0 and self.loss not in LABEL_SMOOTHING_LOSSES:
            takes = ", ".join(LABEL_SMOOTHING_LOSSES)
            raise ValueError(f"label_smoothing applies to loss {takes} only, not {self.loss!r}; set it to 0")
        for key, what in ARCH_NEEDS.items():
            if getattr(self, key) and key not in GAN_ARCHS[self.arch]:
                have = ", ".join(n for n, options in GAN_ARCHS.items() if key in options)
                raise ValueError(f"{key} > 0 {what}, which arch {self.arch!r} lacks (use {have}, or set {key}: 0)")
        has_head = "aux_weight" in GAN_ARCHS[self.arch]
        recipe_aux = RECIPES.get(self.recipe, {}).get("aux_weight", 0.0)
        if recipe_aux > 0 and "aux_weight" not in self.model_fields_set and not has_head:
            raise ValueError(f"recipe {self.recipe!r} sets aux_weight {recipe_aux}, and arch {self.arch!r} has no "
                             "class head; set train_gan.aux_weight: 0 or arch: sngan")
        return self


class FilterConfig(Section):
    """Quality filter: keep samples a real-data classifier assigns to their class with p >= tau."""

    enabled: Literal["auto"] | bool = "auto"  # auto: on for the recipes of recipes.FILTERED_RECIPES (colour)
    tau: float = Field(0.9, ge=0.0, le=1.0)
    max_oversample: float = Field(10.0, ge=1.0)
    fill: bool = False  # a class short of samples above tau: fill with its best below (true) or keep fewer (false)
    epochs: int = Field(5, ge=1)
    judges: int = Field(1, ge=1)  # judges (seeds seed, seed+1, ...) that must all pass a sample: its score is their lowest


class GenerateConfig(Section):
    """Stage `generate`: sampling, filtering and the shard layout."""

    batch_size: int = Field(256, ge=1)
    seed: int = Field(0, ge=0)
    # precision of the generator's forward (bf16: a copy with bf16 weights); auto = bf16 where measured faster
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    shard_size: int = Field(10000, ge=1)
    # generate this many times the plan: a pool the GAN strategies draw afresh from every epoch
    pool_factor: int = Field(1, ge=1)
    export_images: bool = False
    filter: FilterConfig = FilterConfig()


class MixConfig(Section):
    """How synthetic images enter training for strategy `gan_policy`; each knob lists the values to
    try, and the combination with the best validation balanced accuracy is used (never the test set).
    """

    # per class at most cap x real images; null = all; 0 = none (the real data alone, tried once)
    cap_ratio: list[float | None] = [0.0, 1.0, 4.0, None]
    min_score: list[float] = [0.0, 0.9]  # keep images the real-data judge gives p(class) >= this
    synthetic_weight: list[float] = [0.5, 1.0]  # loss weight of a synthetic image (real = 1)
    class_weight: list[bool] = [False, True]  # also weight classes by inverse effective frequency
    # the loss: ce, or logit_adjusted (the prior of the mix, synthetic rows included)
    loss: list[Literal["ce", "logit_adjusted"]] = ["ce"]
    trust: list[bool] = [False]  # graded trust: a synthetic image weighs synthetic_weight x its judge score
    # partial fill: real images duplicated up to this share of the largest class first, synthetic on top
    real_fill: list[float] = [0.0]
    selection_seeds: int = Field(1, ge=1)  # classifier seeds averaged per grid point
    # staged: with both class_weight values, decide class weighting on the real data alone (cap 0)
    # first, then try the synthetic grid with the winner only; full: every combination
    search: Literal["staged", "full"] = "staged"

    @field_validator("cap_ratio", "min_score", "synthetic_weight", "class_weight", "loss", "trust", "real_fill")
    @classmethod
    def _non_empty(cls, v: list) -> list:
        if not v:
            raise ValueError("list at least one value to try")
        return v

    @field_validator("cap_ratio")
    @classmethod
    def _caps(cls, v: list) -> list:
        if any(c is not None and c < 0 for c in v):
            raise ValueError(f"caps must be >= 0 or null, got {v}")
        return v

    @field_validator("real_fill")
    @classmethod
    def _fill(cls, v: list) -> list:
        if any(not 0.0 <= f <= 1.0 for f in v):
            raise ValueError(f"real_fill is a share of the largest class in [0, 1], got {v}")
        return v

    @field_validator("min_score")
    @classmethod
    def _scores(cls, v: list) -> list:
        if any(not 0.0 <= s <= 1.0 for s in v):
            raise ValueError(f"scores are probabilities in [0, 1], got {v}")
        return v

    @field_validator("synthetic_weight")
    @classmethod
    def _weights(cls, v: list) -> list:
        if any(w <= 0 for w in v):
            raise ValueError(f"weights must be > 0, got {v}")
        return v


class EvaluateConfig(Section):
    """Stage `evaluate`: strategies x seeds with one classifier and one test set."""

    strategies: list[str] = [
        "none", "class_weight", "oversample", "smote", "augment", "logit_adjust", "drw", "decouple", "mixup_drw",
        "logit_adjust+augment", "gan", "gan+augment", "gan_la", "gan_la_real_prior", "gan_la_real_prior+augment",
        "gan_la+augment", "gan_mixup_drw", "gan_mixup_drw_real_prior", "gan_drw", "gan_crt", "gan_policy", "synthetic_only",
    ]
    seeds: int = Field(3, ge=1)
    epochs: int = Field(15, ge=1)
    # at least this many optimiser steps per classifier (more epochs on a small training set), so one
    # that enlarges the set is not the only one trained long enough; 0 = epochs only
    min_steps: int = Field(0, ge=0)
    classifier: str = "small_cnn"
    # >= 2: a batch of one never trains (it breaks BatchNorm on 1x1 maps, see evaluate._trains)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(3e-3, gt=0.0)
    # cosine: the rate decays from lr to 0 over all the classifier's steps, so the weights settle
    # (at a constant rate the same run's validation score swung by 4 points with rounding alone)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    balanced_test: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # autocast of the classifiers' training steps (predictions, embeddings fp32); auto = bf16 where the
    # device has it and it is measured faster (small_cnn 1.7x faster on BENCHMARKS.md's AMX CPU)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    seed: int = Field(0, ge=0)  # run i uses seed + i; the balanced test subsample uses seed
    # how the recommendation picks each group's (non-GAN, GAN) best on validation (recommend.SELECTORS; benchmarks/selection.py)
    select_by: Literal["balanced_accuracy", "nll", "strongest_within_noise"] = "strongest_within_noise"
    gan_quality: bool = True  # FID/KID/P-R/memorisation of the synthetic data (needs synthetic data)
    # torch CPU threads while evaluating (restored after): small models run best on one, two on a busy
    # 2-core machine run several times slower; null keeps torch's default
    cpu_threads: int | None = Field(1, ge=1)
    # processes for the independent classifier runs (strategy x seed, mixing policies), each on
    # cpu_threads threads; auto = the cores this process may use / cpu_threads (1 on a GPU)
    workers: int | Literal["auto"] = "auto"
    reuse_runs: bool = True  # keep finished runs in <reports>/runs/ (pipeline.finished_runs): a stopped run resumes
    # the recipes' knobs (params.yaml says each); the pool strategies' synthetic rows: strategies.synthetic_pool
    tau: float = Field(1.0, ge=0.0)
    late_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    mixup_alpha: float = Field(0.2, gt=0.0)
    synthetic_share: float | None = Field(0.35, gt=0.0, lt=1.0)  # most share of an epoch's rows; null = the plan's
    synthetic_candidates: int = Field(1, ge=1)  # > 1: a class's epoch rows are the hardest of this x as many fresh ones
    synthetic_ratio: float | None = Field(None, gt=0.0)  # most synthetic rows per real row of a class; null = no cap
    synthetic_spread: Literal[SPREADS] = "rarest_first"  # classifier_recipe.synthetic_per_epoch
    mix: MixConfig = MixConfig()

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: int | str) -> int | str:
        if v != "auto" and v < 1:
            raise ValueError(f"must be >= 1 or 'auto', got {v}")
        return v

    @field_validator("strategies")
    @classmethod
    def _strategies(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one strategy")
        for s in v:
            _check_choice(s, STRATEGIES)
        return v

    @field_validator("classifier")
    @classmethod
    def _classifier(cls, v: str) -> str:
        return _check_choice(v, CLASSIFIERS)


class Config(Section):
    """All of params.yaml."""

    paths: Paths = Paths()
    data: DataConfig = DataConfig()
    plan: PlanConfig = PlanConfig()
    train_gan: TrainGanConfig = TrainGanConfig()
    generate: GenerateConfig = GenerateConfig()
    evaluate: EvaluateConfig = EvaluateConfig()


def dump(config: Config) -> dict:
    """Plain dict of `config` (JSON/YAML-safe), e.g. for manifests and reports."""
    return config.model_dump(mode="json")
