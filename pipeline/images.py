"""Conforming uint8 HWC images: channel conversion, resizing, stacking into one batch.

`decode_images` turns a list of encoded images (via `pipeline.png.decode`) into one uint8
(N, H, W, C) batch at one size and channel count; every error names the file or row at fault.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline import png
from pipeline.errors import DataError


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """uint8 HWC with C in (1, 3, 4) -> HWC with `channels` (1: luminance, 3: RGB; alpha dropped)."""
    c = img.shape[-1]
    if c == 4:
        img, c = img[..., :3], 3
    if c == channels:
        return img
    if channels == 3:
        return np.repeat(img, 3, axis=-1)
    # ITU-R 601-2 luma, as Pillow's "L" conversion
    luma = img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 HWC -> (size, size, C) with Pillow's antialiased bilinear filter."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    c = img.shape[-1]
    pil = Image.fromarray(img[..., 0] if c == 1 else img)
    out = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))
    return out[..., None] if c == 1 else out


def conform(img: np.ndarray, where: str, size: int | None, channels: int | None, allow_resize: bool) -> np.ndarray:
    """Bring one uint8 HWC image to (size, size, channels); `None` keeps that property as it is."""
    if channels is not None:
        img = to_channels(img, channels)
    elif img.shape[-1] == 4:
        img = to_channels(img, 3)
    if size is not None and img.shape[:2] != (size, size):
        if not allow_resize:
            raise DataError(
                f"{where}: image is {img.shape[1]}x{img.shape[0]}, expected {size}x{size}; "
                "set data.resize=true to resize"
            )
        img = resize(img, size)
    return img


def stack(images: list[np.ndarray], where: str) -> np.ndarray:
    """List of uint8 HWC of one shape -> (N, H, W, C); a mismatch names the first odd image."""
    if not images:
        return np.zeros((0, 1, 1, 1), dtype=np.uint8)
    shape = images[0].shape
    for i, img in enumerate(images):
        if img.shape != shape:
            raise DataError(
                f"{where}: image {i} is {img.shape}, the first is {shape}; "
                "set data.image_size (and data.channels) to resize them all"
            )
    return np.stack(images)


def decode_images(
    data: list[bytes], where: str, size: int | None = None, channels: int | None = None,
    allow_resize: bool = True,
) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 (N, H, W, C) at one size; errors name `where` and the row."""
    out = []
    for i, b in enumerate(data):
        row = f"{where} row {i}"
        out.append(conform(png.decode(b, row), row, size, channels, allow_resize))
    if not out:
        c = channels or 1
        return np.zeros((0, size or 1, size or 1, c), dtype=np.uint8)
    return stack(out, where)
