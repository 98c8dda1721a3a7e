"""Image mosaics: a batch of uint8 images tiled into one uint8 image by `torchvision.utils.make_grid`.

`image_grid` lays `rows` rows of equal cells on white, with `pad` pixels between cells and
`margin` around them, cells upscaled (nearest) to at least `min_cell` pixels. The release's
sample grid (`pipeline.release`) is one row per class; the GAN's progress grids can be the same.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.utils import make_grid

WHITE = 255


def image_grid(images: np.ndarray, rows: int, min_cell: int = 0, pad: int = 2, margin: int | None = None) -> np.ndarray:
    """uint8 (rows*cols, H, W, C) -> one uint8 (H', W', C) mosaic, row r holding images r*cols..r*cols+cols-1.

    Args:
        images: the cells in row-major order; `len(images) // rows` per row (extras are dropped).
        rows: rows of the mosaic (>= 1).
        min_cell: upscale each image by a whole factor until its longer side is >= this many px.
        pad: white pixels between two cells.
        margin: white pixels around the mosaic (None: `pad`; at most `pad`).

    Returns:
        uint8 (rows*(h+pad) - pad + 2*margin, cols*(w+pad) - pad + 2*margin, C), h and w the
        upscaled cell size.
    """
    n, h, w, c = images.shape
    cols = n // rows
    margin = pad if margin is None else margin
    if rows < 1 or cols < 1 or not 0 <= margin <= pad:
        raise ValueError(f"image_grid: {n} images in {rows} rows, margin {margin} and pad {pad}; "
                         "need rows >= 1, at least one image per row and 0 <= margin <= pad")
    scale = max(1, -(-min_cell // max(h, w)))
    cells = torch.from_numpy(np.ascontiguousarray(images[: rows * cols])).permute(0, 3, 1, 2)
    cells = cells.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    if rows * cols == 1:  # make_grid returns a lone image without its padding
        cells = torch.cat([cells, torch.full_like(cells, WHITE)])
    grid = make_grid(cells, nrow=cols, padding=pad, pad_value=WHITE)[:c]  # make_grid makes gray images RGB
    cut = pad - margin
    height, width = rows * (h * scale + pad) + pad, cols * (w * scale + pad) + pad
    return grid[:, cut : height - cut, cut : width - cut].permute(1, 2, 0).contiguous().numpy()
