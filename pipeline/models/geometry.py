"""The shape plan every GAN architecture builds to: how a generator reaches an image's (H, W).

`plan_geometry((C, H, W))` gives a `Geometry`: `blocks` 2x upsamplings from a 4..7 pixel start
grid, the few extra rows/columns cropped (28 = 7 * 2^2 exactly; 9 -> built at 10, cropped to 9).
The arch modules (sngan, dcgan, concat) build from it; `pipeline.models.gans` plans it.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Geometry:
    """How a generator reaches (H, W): `blocks` 2x upsamplings from a (start_h, start_w) grid."""

    channels: int
    height: int
    width: int
    blocks: int
    start_h: int
    start_w: int


def plan_geometry(image_shape: tuple[int, int, int]) -> Geometry:
    """The upsampling plan for image_shape (C, H, W).

    blocks = max(1, floor(log2(min(H, W) / 4))), start = ceil(side / 2^blocks), so the start grid
    is 4..7 pixels for sides 8..64 and the built image is at most 2^blocks - 1 pixels too large.
    """
    c, h, w = (int(v) for v in image_shape)
    if c not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {c} (image_shape is (C, H, W))")
    if min(h, w) < 4 or max(h, w) > 512:
        raise ValueError(f"image sides must be in 4..512, got {h}x{w}")
    blocks = max(1, int(math.floor(math.log2(min(h, w) / 4))))
    return Geometry(c, h, w, blocks, math.ceil(h / 2**blocks), math.ceil(w / 2**blocks))
