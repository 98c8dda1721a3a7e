"""Downstream classifiers, keyed by the names params.yaml uses (`evaluate.classifier`).

`CLASSIFIERS[name](image_shape (C, H, W), num_classes)` builds a `Classifier`: `features(x)` is the
penultimate embedding (used for FID/KID and precision/recall) and `forward(x)` the logits.
Inputs are float (B, C, H, W) in [-1, 1] (see `pipeline.pixels.to_float`). Weights are never downloaded.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn


class Classifier(nn.Module):
    """A feature extractor followed by one linear layer; `features` is what GAN metrics embed."""

    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.body = body
        self.feature_dim = feature_dim
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, feature_dim)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> logits (B, num_classes)."""
        return self.head(self.body(x))


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def small_cnn(image_shape: tuple[int, int, int], num_classes: int, width: int = 16, feature_dim: int = 64) -> Classifier:
    """A CNN that trains in seconds on 2 CPU cores: a stem, then conv+pool stages down to a 4..7 grid.

    For 8x8 digits: stem 8x8x16 -> stage 8x8x32 -> pool 4x4 -> avg-pool 2x2x32 -> 128 -> 64 features.
    For 28x28: two stages (14, 7); for 32x32: three (16, 8, 4). Channels double per stage, at most 8*width.
    """
    c, h, w = (int(v) for v in image_shape)
    layers = _conv_bn(c, width)
    side, ch = min(h, w), width
    while side >= 8:
        nxt = min(2 * ch, 8 * width)
        layers += _conv_bn(ch, nxt) + [nn.MaxPool2d(2)]
        side, ch = side // 2, nxt
    grid = min(2, side)
    body = nn.Sequential(
        *layers,
        nn.AdaptiveAvgPool2d(grid),  # (B, ch, grid, grid)
        nn.Flatten(),
        nn.Linear(ch * grid * grid, feature_dim),
        nn.ReLU(inplace=True),
    )
    return Classifier(body, feature_dim, num_classes)


def resnet18(image_shape: tuple[int, int, int], num_classes: int) -> Classifier:
    """torchvision's ResNet-18 (weights=None) adapted to small images: 3x3 stride-1 stem, no max-pool."""
    # imported here: torchvision.models costs ~1.5 s to import, paid by every evaluation worker
    from torchvision.models import resnet18 as torchvision_resnet18

    c = int(image_shape[0])
    net = torchvision_resnet18(weights=None)
    # the ImageNet stem (7x7 stride 2 + max-pool) would shrink a 32x32 image to 8x8 before any block
    net.conv1 = nn.Conv2d(c, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()  # body now ends with the 512-d average-pooled features
    return Classifier(net, 512, num_classes)


CLASSIFIERS: dict[str, Callable[[tuple[int, int, int], int], Classifier]] = {
    "small_cnn": small_cnn,
    "resnet18": resnet18,
}


def build_classifier(name: str, image_shape: tuple[int, int, int], num_classes: int, generator: torch.Generator) -> Classifier:
    """`CLASSIFIERS[name]` with every parameter initialised from `generator` (not the global RNG)."""
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {name!r}; valid: {', '.join(sorted(CLASSIFIERS))}")
    # module constructors draw default weights from the global RNG: fork it so callers' state is
    # untouched, then re-draw every weight from `generator`
    with torch.random.fork_rng(devices=[]):
        model = CLASSIFIERS[name](image_shape, num_classes)
    init_weights(model, generator)
    return model


@torch.no_grad()
def init_weights(model: nn.Module, generator: torch.Generator) -> None:
    """Re-draw conv/linear weights as PyTorch's defaults do, but from `generator`; BatchNorm to (1, 0).

    Default conv/linear init is kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    with the bias drawn from the same bound.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                bound = 1.0 / math.sqrt(m.weight[0].numel())
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()


def label_probability(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """softmax(logits)[i, y_i]: p(y_i | x_i) from class logits (B, K) and labels (B,), shape (B,)."""
    return torch.softmax(logits, dim=1).gather(1, y.view(-1, 1)).squeeze(1)


def class_probability(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """p(y_i | x_i) under `model` for images x (B, C, H, W) in [-1, 1]: (B,) on the CPU."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return label_probability(model(x.to(device).float()), y.to(device)).cpu()
