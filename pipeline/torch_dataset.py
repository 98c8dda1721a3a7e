"""A release folder as a torch map-style dataset (`load_torch`): its decoded images as float
(C, H, W) tensors in [0, 1] with their labels, ImageFolder-style attributes, and each row's source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pipeline.data import ImageTable
from pipeline.reader import folder_of, read_shards
from pipeline.tables import decode_table


def read_dataset(
    path: str | Path, mix: str | None = None, real: str | Path | None = None, verify: bool = False,
    transform: Callable | None = None,
) -> "ImageDataset":
    """The folder as an `ImageDataset` (its `source` from the `source` column, when there is one);
    arguments as `read_shards`, plus `transform`, applied to each image tensor."""
    table = read_shards(path, mix, real, verify)
    source = table.column("source").to_pylist() if "source" in table.schema.names else None
    return ImageDataset(decode_table(table, folder_of(path)), transform, source)


class ImageDataset:
    """A map-style torch dataset over an `ImageTable`: item i is (float (C, H, W) in [0, 1], label).

    Duck-typed (`__len__`/`__getitem__`), so `DataLoader`, `Subset` and `ConcatDataset` take it.
    `classes`, `class_to_idx` and `targets` follow torchvision's ImageFolder; `source[i]` says
    "real" or "synthetic" when known.
    """

    def __init__(self, table: ImageTable, transform=None, source: list[str] | None = None) -> None:
        self.table = table
        self.transform = transform
        self.source = source
        self.classes = list(table.class_names)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.targets = table.labels.tolist()

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int):
        # uint8 (H, W, C) -> float (C, H, W) / 255, as torchvision's ToTensor
        x = torch.from_numpy(np.ascontiguousarray(self.table.images[i])).permute(2, 0, 1).float().div_(255.0)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.table.labels[i])
