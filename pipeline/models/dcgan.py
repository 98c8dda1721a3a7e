"""DCGAN-style conditional GAN (Radford et al. 2016) with label embeddings: the `dcgan` arch.

Generator: [z, embed(y)] -> linear -> transposed convs (4x4, stride 2) with BatchNorm and ReLU.
Discriminator: the image plus one extra channel holding embed(y) reshaped to H x W, strided 4x4
convs with LeakyReLU (no BatchNorm, so real and fake can share a batch and WGAN-GP stays valid).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.models.geometry import Geometry


WIDTHS = {"light": 16, "base": 64}


def level_channels(width: int, blocks: int) -> list[int]:
    """Channels at each resolution level, coarsest first: width * min(8, 2^(blocks - i))."""
    return [width * min(8, 2 ** (blocks - i)) for i in range(blocks + 1)]


class Generator(nn.Module):
    """z (B, z_dim), y (B,) -> (B, C, H, W) in [-1, 1]."""

    def __init__(self, geo: Geometry, num_classes: int, z_dim: int, width: int):
        super().__init__()
        ch = level_channels(width, geo.blocks)
        self.geo = geo
        self.embed = nn.Embedding(num_classes, z_dim)
        self.fc = nn.Sequential(
            nn.Linear(2 * z_dim, ch[0] * geo.start_h * geo.start_w, bias=False),
            nn.Unflatten(1, (ch[0], geo.start_h, geo.start_w)),  # ch[0] x start_h x start_w
            nn.BatchNorm2d(ch[0]),
            nn.ReLU(),
        )
        ups = []
        for i in range(geo.blocks):  # each: ch[i] x s x s -> ch[i+1] x 2s x 2s
            ups += [nn.ConvTranspose2d(ch[i], ch[i + 1], 4, 2, 1, bias=False), nn.BatchNorm2d(ch[i + 1]), nn.ReLU()]
        self.ups = nn.Sequential(*ups)
        self.out = nn.Conv2d(ch[-1], geo.channels, 3, padding=1)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        g = self.geo
        h = torch.tanh(self.out(self.ups(self.fc(torch.cat([z, self.embed(y)], dim=1)))))
        top = (h.shape[2] - g.height) // 2
        left = (h.shape[3] - g.width) // 2
        return h[:, :, top : top + g.height, left : left + g.width]


class Discriminator(nn.Module):
    """x (B, C, H, W), y (B,) -> logits (B,); with `aux_classifier` = n heads, `classes=True` adds (B, n * K) class logits."""

    def __init__(self, geo: Geometry, num_classes: int, width: int, aux_classifier: int = 0):
        super().__init__()
        self.geo = geo
        self.embed = nn.Embedding(num_classes, geo.height * geo.width)
        ch = level_channels(width, geo.blocks)[::-1]
        layers: list[nn.Module] = []
        cin, h, w = geo.channels + 1, geo.height, geo.width
        for i in range(geo.blocks):  # each: cin x h x w -> ch[i] x floor(h/2) x floor(w/2)
            layers += [nn.Conv2d(cin, ch[i], 4, 2, 1), nn.LeakyReLU(0.2)]
            cin, h, w = ch[i], h // 2, w // 2
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(cin * h * w, 1)
        self.classifier = nn.Linear(cin * h * w, num_classes * aux_classifier) if aux_classifier else None

    def forward(self, x: Tensor, y: Tensor, classes: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        label_map = self.embed(y).view(-1, 1, self.geo.height, self.geo.width).to(x.dtype)
        h = self.convs(torch.cat([x, label_map], dim=1)).flatten(1)
        logits = self.fc(h).squeeze(1)
        return (logits, self.classifier(h)) if classes else logits


def build(
    geo: Geometry, num_classes: int, z_dim: int, width: int, aux_classifier: int = 0
) -> tuple[nn.Module, nn.Module]:
    """(Generator, Discriminator) for `geo`; see `pipeline.models.gans.GanArch.build`."""
    return Generator(geo, num_classes, z_dim, width), Discriminator(geo, num_classes, width, aux_classifier)
