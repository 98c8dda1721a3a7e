"""The `sngan_hier` arch: sngan with BigGAN's shared class embedding and hierarchical latents
(Brock et al. 2019), one of the generator issue's diversity techniques.

In `sngan` each conditional BatchNorm learns its own gain and bias per class, so a rare class's
affine is fitted to its few images alone, and the noise z enters only at the first layer. Here
the classes share one embedding e(y) (SHARED_DIM values), z is split into one chunk per
resolution level, and every BatchNorm's gain and bias are linear in [e(y), z chunk of its block]:
classes share what the embedding space lets them share, and the noise steers every scale.

The discriminator is sngan's (projection head, optional class head). Sampling runs the plain
forward: the affine depends on each sample's noise, so sngan's per-class folding
(`sngan.ClassGenerator`) does not apply.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.models import sngan
from pipeline.models.geometry import Geometry

SHARED_DIM = 32  # the shared class embedding's size (BigGAN: 128 at ImageNet scale)


class LatentConditionalBatchNorm2d(sngan.ConditionalBatchNorm2d):
    """BatchNorm without its own affine, then gain 1 + W_g v and bias W_b v of a conditioning
    vector v (B, cond_dim): [shared class embedding, the block's noise chunk]. W_g and W_b start
    at 0, so the start is sngan's (every gain 1, every bias 0). Blending (`conditioning`) and the
    embedding noise act on the resulting gain and bias as in sngan."""

    def __init__(self, num_features: int, cond_dim: int):
        nn.Module.__init__(self)
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gain = nn.Linear(cond_dim, num_features, bias=False)
        self.bias = nn.Linear(cond_dim, num_features, bias=False)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def class_affine(self, v: Tensor) -> tuple[Tensor, Tensor]:
        return 1.0 + self.gain(v), self.bias(v)


def latent_chunks(z_dim: int, levels: int) -> list[int]:
    """z_dim split as evenly as it goes into `levels` chunks, the larger ones first."""
    if z_dim < levels:
        raise ValueError(f"sngan_hier splits z into {levels} chunks (one per resolution level): need z_dim >= {levels}, got {z_dim}")
    return [z_dim // levels + (1 if i < z_dim % levels else 0) for i in range(levels)]


class HierGenerator(nn.Module):
    """z (B, z_dim), y (B,) -> (B, C, H, W) in [-1, 1]: z's first chunk through the linear layer to
    the start grid, each later chunk with the shared embedding of y into one block's BatchNorms."""

    def __init__(self, geo: Geometry, num_classes: int, z_dim: int, width: int):
        super().__init__()
        ch = sngan.level_channels(width, geo.blocks)
        self.geo = geo
        self.chunks = latent_chunks(z_dim, geo.blocks + 1)
        self.shared = nn.Embedding(num_classes, SHARED_DIM)
        self.fc = nn.Linear(self.chunks[0], ch[0] * geo.start_h * geo.start_w)
        self.blocks = nn.ModuleList(
            sngan.GBlock(ch[i], ch[i + 1], num_classes,
                         norm=lambda f, d=SHARED_DIM + self.chunks[i + 1]: LatentConditionalBatchNorm2d(f, d))
            for i in range(geo.blocks)
        )
        self.out_bn = nn.BatchNorm2d(ch[-1])
        self.out_conv = nn.Conv2d(ch[-1], geo.channels, 3, padding=1)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        g = self.geo
        zs = torch.split(z, self.chunks, dim=1)
        e = self.shared(y)
        h = self.fc(zs[0]).view(z.shape[0], -1, g.start_h, g.start_w).contiguous(memory_format=torch.channels_last)
        for block, chunk in zip(self.blocks, zs[1:]):
            h = block(h, torch.cat([e, chunk.to(e.dtype)], dim=1))
        return sngan.to_image(h, self.out_bn, self.out_conv, g)


def class_parameters(G: nn.Module) -> list[Tensor]:
    """Each BatchNorm's class part, (num_classes, F) per gain (less 1) and bias: W applied to each
    class's shared embedding with the noise chunk at 0. What gSR (`train_gan.gsr_weight`)
    regularises; sngan's form for this arch."""
    e = G.shared.weight  # (K, SHARED_DIM)
    out: list[Tensor] = []
    for m in G.modules():
        if isinstance(m, LatentConditionalBatchNorm2d):
            out += [e @ m.gain.weight[:, :SHARED_DIM].t(), e @ m.bias.weight[:, :SHARED_DIM].t()]
    return out


def build(
    geo: Geometry, num_classes: int, z_dim: int, width: int, aux_classifier: int = 0
) -> tuple[nn.Module, nn.Module]:
    """(HierGenerator, sngan's Discriminator) for `geo`; see `pipeline.models.gans.GanArch.build`."""
    return HierGenerator(geo, num_classes, z_dim, width), sngan.Discriminator(geo, num_classes, width, aux_classifier)
