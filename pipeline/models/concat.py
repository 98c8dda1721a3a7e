"""The tutorial conditional GAN (Mirza & Osindero 2014 style): the `concat` reference arch.

Both players are MLPs with LeakyReLU(0.2); a learned label embedding is concatenated to the noise
(G) and to the flattened image (D). The tutorial trains it with BCE and Adam(2e-4, beta1 0.5): name
them (`train_gan.loss: bce`, `beta1: 0.5`, `diffaug: ''`), as benchmarks/speed.py's reference does;
like every arch it trains with the `train_gan` values given. Unlike most tutorials D has no
dropout: it would draw from the global RNG.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.models.geometry import Geometry


# hidden widths are width, 2*width, 4*width (the tutorial's 256, 512, 1024 at `base`)
WIDTHS = {"light": 128, "base": 256}


def _mlp(sizes: list[int], last_act: nn.Module | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        layers.append(nn.LeakyReLU(0.2) if i < len(sizes) - 2 else last_act or nn.Identity())
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """z (B, z_dim), y (B,) -> (B, C, H, W) in [-1, 1]."""

    def __init__(self, geo: Geometry, num_classes: int, z_dim: int, width: int):
        super().__init__()
        self.geo = geo
        self.embed = nn.Embedding(num_classes, num_classes)
        pixels = geo.channels * geo.height * geo.width
        self.net = _mlp([z_dim + num_classes, width, 2 * width, 4 * width, pixels], nn.Tanh())

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        g = self.geo
        return self.net(torch.cat([z, self.embed(y)], dim=1)).view(-1, g.channels, g.height, g.width)


class Discriminator(nn.Module):
    """x (B, C, H, W), y (B,) -> logits (B,)."""

    def __init__(self, geo: Geometry, num_classes: int, width: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, num_classes)
        pixels = geo.channels * geo.height * geo.width
        self.net = _mlp([pixels + num_classes, 4 * width, 2 * width, width, 1], None)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.net(torch.cat([x.flatten(1), self.embed(y).to(x.dtype)], dim=1)).squeeze(1)


def build(geo: Geometry, num_classes: int, z_dim: int, width: int) -> tuple[nn.Module, nn.Module]:
    """(Generator, Discriminator) for `geo`; see `pipeline.models.gans.GanArch.build`."""
    return Generator(geo, num_classes, z_dim, width), Discriminator(geo, num_classes, width)
