"""The implementation names params.yaml chooses from, and what each supports, without torch.

`pipeline.config` validates against these, so reading params (`augment --help`, `prepare`,
`plan`, every error about a bad key) does not load torch, which takes seconds. The registries
that dispatch the calls are keyed by the same names: `pipeline.diffaug.AUGMENTS`,
`pipeline.losses.LOSSES`, `pipeline.models.GAN_ARCHS` and `pipeline.models.CLASSIFIERS`;
tests/test_architecture.py checks that each matches its entry here, traits included.
"""

from __future__ import annotations

# DiffAugment operation groups (`train_gan.diffaug`, comma-separated)
AUGMENT_OPS = ("color", "translation", "cutout")

# GAN losses (`train_gan.loss`), and those that take `train_gan.label_smoothing`
LOSSES = ("bce", "hinge", "lsgan", "wgan-gp")
LABEL_SMOOTHING_LOSSES = ("bce",)

# GAN architectures (`train_gan.arch`) -> the arch-dependent train_gan options each supports
# (`pipeline.config.ARCH_NEEDS` says what each option needs; `pipeline.models.gans.OPTION_HOOKS`
# names the GanArch attribute that implements it)
_SNGAN_FAMILY = frozenset({"aux_weight", "transition_steps", "gsr_weight", "embed_noise"})
GAN_ARCHS: dict[str, frozenset[str]] = {
    "sngan": _SNGAN_FAMILY,
    "sngan_hier": _SNGAN_FAMILY,
    "dcgan": frozenset({"aux_weight"}),
    "concat": frozenset(),
}

# downstream classifiers (`evaluate.classifier`)
CLASSIFIERS = ("small_cnn", "resnet18")
