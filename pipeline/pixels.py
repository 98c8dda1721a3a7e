"""Pixel formats: the uint8 (N, H, W, C) images that tables and shards store, and the float
(N, C, H, W) tensors in [-1, 1] that the GAN generates and the classifiers read.

One owner of the two conversions, so that a generated image, the PNG it is saved as and the
tensor a judge scores are the same numbers everywhere.
"""

from __future__ import annotations

import numpy as np
import torch


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 tensor (N, H, W, C), on any device -> contiguous float32 (N, C, H, W) in [-1, 1]: x / 127.5 - 1."""
    # contiguous NCHW: a permuted view makes BatchNorm on CPU take a slow path (~20x)
    return images.permute(0, 3, 1, 2).contiguous().float().div_(127.5).sub_(1.0)


def to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 array (N, H, W, C) -> contiguous float32 (N, C, H, W) in [-1, 1] (`from_uint8`)."""
    return from_uint8(torch.from_numpy(np.ascontiguousarray(images)))


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float (B, C, H, W) in [-1, 1] -> uint8 (B, H, W, C): round((x + 1) * 127.5), clipped.

    Clamping after rounding equals clamping x to [-1, 1] first, with one pass less. `x` is
    modified only through a new tensor (the first `add` copies).
    """
    return x.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
