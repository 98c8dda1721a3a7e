"""Class-conditional GAN architectures, keyed by the names params.yaml uses (`train_gan.arch`).

`GAN_ARCHS[name].build(image_shape, num_classes, z_dim, size)` returns (G, D) with
G(z (B, z_dim), y (B,) long) -> images (B, C, H, W) in [-1, 1] and D(x, y) -> logits (B,).
Any H, W in 8..64 and C in {1, 3}: generators upsample by 2 from a start grid (`pipeline.models.geometry`) and
crop the few extra rows/columns (28 = 7 * 2^2 exactly; 9 -> built at 10, cropped to 9).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import Tensor, nn

from pipeline.models import biggan, concat, dcgan, sngan
from pipeline.models.geometry import Geometry, plan_geometry


@dataclasses.dataclass(frozen=True)
class GanArch:
    """One architecture family.

    Attributes:
        name: registry key.
        make: (geometry, num_classes, z_dim, width[, aux_classifier]) -> (G, D).
        widths: base width per size name (`light` trains fast on 2 CPU cores).
        description: one line for docs and reports.

    An arch carries no training settings: every arch trains with the `train_gan` values that
    params.yaml, --set and the data recipe (`pipeline.recipes`) give.
    """

    name: str
    make: Callable[[Geometry, int, int, int], tuple[nn.Module, nn.Module]]
    widths: dict[str, int]
    description: str
    aux_classifier: bool = False  # D can carry an AC-GAN class head (`train_gan.aux_weight`)
    # (module, strength in [0, 1]) -> None: how much the class conditions G or D, for transitional
    # training (`train_gan.transition_steps`); None: this arch is always fully conditional
    set_conditioning: Callable[[nn.Module, float], None] | None = None
    # generator -> its class-conditional parameters, each (num_classes, F), for gSR
    # (`train_gan.gsr_weight`); None: this arch has none of that form
    class_parameters: Callable[[nn.Module], list[Tensor]] | None = None
    # (generator, std, torch.Generator) -> None: noise on G's class embeddings while it trains
    # (`train_gan.embed_noise`); None: this arch has no per-class embedding of that form
    set_embed_noise: Callable[[nn.Module, float, torch.Generator], None] | None = None

    def build(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        z_dim: int,
        size: str = "light",
        width: int | None = None,
        aux_classifier: int = 0,
    ) -> tuple[nn.Module, nn.Module]:
        """Build a fresh (generator, discriminator) pair.

        Args:
            image_shape: (C, H, W) of the training images.
            num_classes: number of labels y can take (all classes, trained or not).
            z_dim: noise dimension.
            size: a key of `widths` ("light" or "base").
            width: overrides the size's base width (channels of the last G block / first D block).
            aux_classifier: the number of class heads of D (0: none; 2: TAC-GAN's head and its
                twin), so `D(x, y, classes=True)` returns (logits (B,), class logits
                (B, heads * num_classes), head after head); only archs with `aux_classifier`.

        Raises:
            ValueError: bad image shape, size name or width, or a class head this arch lacks.
        """
        if size not in self.widths:
            raise ValueError(f"unknown size {size!r} for arch {self.name!r}; valid: {', '.join(self.widths)}")
        if num_classes < 1 or z_dim < 1:
            raise ValueError(f"need num_classes >= 1 and z_dim >= 1, got {num_classes}, {z_dim}")
        w = self.widths[size] if width is None else int(width)
        if w < 4:
            raise ValueError(f"width must be >= 4, got {w}")
        if aux_classifier and not self.aux_classifier:
            have = ", ".join(n for n, a in GAN_ARCHS.items() if a.aux_classifier)
            raise ValueError(f"arch {self.name!r} has no auxiliary class head; use one of: {have}")
        extra = (int(aux_classifier),) if aux_classifier else ()
        G, D = self.make(plan_geometry(image_shape), num_classes, z_dim, w, *extra)
        G.z_dim, G.num_classes, G.image_shape = z_dim, num_classes, tuple(int(v) for v in image_shape)
        return G, D


# arch-dependent train_gan option -> the GanArch attribute that implements it (an arch supports the
# option where the attribute is set; `pipeline.choices.GAN_ARCHS` lists the same, torch-free)
OPTION_HOOKS = {"aux_weight": "aux_classifier", "transition_steps": "set_conditioning",
                "gsr_weight": "class_parameters", "embed_noise": "set_embed_noise"}

GAN_ARCHS: dict[str, GanArch] = {
    "sngan": GanArch(
        "sngan",
        sngan.build,
        sngan.WIDTHS,
        "ResNet G with class-conditional BatchNorm; spectral-norm ResNet D with a projection head",
        aux_classifier=True,
        set_conditioning=sngan.set_conditioning,
        class_parameters=sngan.class_parameters,
        set_embed_noise=sngan.set_embed_noise,
    ),
    "sngan_hier": GanArch(
        "sngan_hier",
        biggan.build,
        sngan.WIDTHS,
        "sngan with BigGAN's shared class embedding and hierarchical latents (every BatchNorm's "
        "gain and bias from the class embedding and a chunk of the noise)",
        aux_classifier=True,
        set_conditioning=sngan.set_conditioning,
        class_parameters=biggan.class_parameters,
        set_embed_noise=sngan.set_embed_noise,
    ),
    "dcgan": GanArch(
        "dcgan",
        dcgan.build,
        dcgan.WIDTHS,
        "DCGAN: transposed-conv G and strided-conv D, label embeddings as inputs",
        aux_classifier=True,
    ),
    "concat": GanArch(
        "concat",
        concat.build,
        concat.WIDTHS,
        "the tutorial cGAN: MLPs with the label embedding concatenated to noise and to the image",
    ),
}
