"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) for data-efficient GAN training.

The same random transform is applied to real and fake images before the discriminator, so D never
sees un-augmented images and G gets gradients through the transform. Policies are comma-separated
keys of `AUGMENTS` (e.g. "color,translation,cutout"); all randomness comes from an explicit CPU
`torch.Generator`, so a run is reproducible and resumable. `AdaptiveStrength` sets how often the
transforms apply from how sure D is of the real images (ADA), instead of always.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def _uniform(n: int, generator: torch.Generator, x: Tensor) -> Tensor:
    """(n, 1, 1, 1) draws from U(0, 1) on the CPU generator, moved to x's device and dtype."""
    return torch.rand((n, 1, 1, 1), generator=generator).to(x.device, x.dtype)


def brightness(x: Tensor, generator: torch.Generator) -> Tensor:
    """Add a per-image offset in [-0.5, 0.5)."""
    return x + (_uniform(x.shape[0], generator, x) - 0.5)


def saturation(x: Tensor, generator: torch.Generator) -> Tensor:
    """Scale each pixel's distance from its channel mean by [0, 2) (identity on 1 channel)."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_uniform(x.shape[0], generator, x) * 2.0) + mean


def contrast(x: Tensor, generator: torch.Generator) -> Tensor:
    """Scale each image's distance from its mean intensity by [0.5, 1.5)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x.shape[0], generator, x) + 0.5) + mean


def translation(x: Tensor, generator: torch.Generator, ratio: float = 0.125) -> Tensor:
    """Shift each image by up to ratio*(H, W) pixels each way; uncovered pixels become 0."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), generator=generator).to(x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), generator=generator).to(x.device)
    # output pixel (i, j) reads input pixel (i - dy, j - dx); shapes (b, h, 1) and (b, 1, w)
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx
    inside = ((rows >= 0) & (rows < h)) & ((cols >= 0) & (cols < w))  # (b, h, w)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    moved = x.permute(0, 2, 3, 1)[batch, rows.clamp(0, h - 1), cols.clamp(0, w - 1)]  # (b, h, w, c)
    return (moved * inside.unsqueeze(-1).to(x.dtype)).permute(0, 3, 1, 2)  # channels_last strides


def cutout(x: Tensor, generator: torch.Generator, ratio: float = 0.5) -> Tensor:
    """Zero one square of ratio*(H, W) per image, centred anywhere (clipped at the borders)."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # centre (cy, cx) uniform over the image, so holes near an edge are partly outside it
    cy = torch.randint(0, h, (b, 1, 1), generator=generator).to(x.device)
    cx = torch.randint(0, w, (b, 1, 1), generator=generator).to(x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    hole = (rows >= cy - ch // 2) & (rows < cy - ch // 2 + ch)
    hole = hole & (cols >= cx - cw // 2) & (cols < cx - cw // 2 + cw)  # (b, h, w)
    return x * (~hole).unsqueeze(1).to(x.dtype)


AUGMENTS: dict[str, list[Callable[[Tensor, torch.Generator], Tensor]]] = {
    "color": [brightness, saturation, contrast],
    "translation": [translation],
    "cutout": [cutout],
}


def parse_policy(policy: str) -> list[str]:
    """"color, translation" -> ["color", "translation"]; "" -> []. Unknown keys raise ValueError."""
    keys = [p.strip() for p in policy.split(",") if p.strip()]
    for key in keys:
        if key not in AUGMENTS:
            raise ValueError(f"unknown DiffAugment policy {key!r}; valid: {', '.join(sorted(AUGMENTS))}")
    return keys


def diff_augment(x: Tensor, policy: str, generator: torch.Generator, p: float = 1.0) -> Tensor:
    """Apply the transforms of `policy` to a batch x (B, C, H, W); differentiable w.r.t. x.

    Args:
        x: images in [-1, 1] (any float dtype, any device).
        policy: comma-separated keys of `AUGMENTS`; "" returns x unchanged.
        generator: CPU generator that every random draw comes from, in a fixed order.
        p: each transform applies to each image with probability p (ADA's strength, `AdaptiveStrength`);
            1 applies every transform to every image and draws nothing more.

    Raises:
        ValueError: a policy key not in `AUGMENTS` (the message lists the valid ones).
    """
    for key in parse_policy(policy):
        for fn in AUGMENTS[key]:
            out = fn(x, generator)
            if p < 1.0:
                keep = (torch.rand((x.shape[0], 1, 1, 1), generator=generator) < p).to(x.device)
                out = torch.where(keep, out, x)
            x = out
    return x


class AdaptiveStrength:
    """ADA's overfitting heuristic (Karras et al. 2020) for the augmentation probability p.

    r = E[sign(D(real))] over the last `interval` steps: near 1 when D is sure of every real
    image (it memorised them). Every `interval` steps p moves by `interval * batch / images`
    towards more augmentation when r > target and towards less when r < target, within [0, 1];
    `images` is how many images p takes to go from 0 to 1. p starts at 0.
    """

    interval = 4

    def __init__(self, target: float, images: int, batch: int):
        self.target, self.step_size = target, self.interval * batch / images
        self.p, self._signs, self._count = 0.0, 0.0, 0

    def observe(self, real_logits: Tensor) -> None:
        """Record one step's real logits; adjust p at the end of each interval."""
        self._signs += float(torch.sign(real_logits.detach().float()).mean())
        self._count += 1
        if self._count == self.interval:
            r = self._signs / self._count
            direction = 1.0 if r > self.target else -1.0 if r < self.target else 0.0
            self.p = min(1.0, max(0.0, self.p + direction * self.step_size))
            self._signs, self._count = 0.0, 0

    def state(self) -> list[float]:
        return [self.p, self._signs, float(self._count)]

    def restore(self, state: list[float]) -> None:
        self.p, self._signs, self._count = float(state[0]), float(state[1]), int(state[2])
