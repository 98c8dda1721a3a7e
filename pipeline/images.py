"""Image codecs: PNG bytes <-> uint8 HWC arrays, with resizing and channel conversion.

Decoding names the file or row at fault; encoding works on whole batches so the shard writer has
no per-file Python on disk paths (PNG compression itself is per image, in Pillow's C code).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import DataError

# Images past this many pixels are refused before decoding (decompression bombs).
MAX_PIXELS = 64_000_000


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


def decode(data: bytes, where: str) -> np.ndarray:
    """PNG/JPEG/... bytes -> uint8 HWC (C = 1, 3 or 4). `where` names the file or row in errors."""
    if not data:
        raise DataError(f"{where}: empty image (0 bytes); replace or remove the file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise DataError(f"{where}: {im.width}x{im.height} image is too large")
                im.load()
                mode = {"1": "L", "L": "L", "LA": "RGBA", "P": "RGBA", "RGB": "RGB", "RGBA": "RGBA"}
                im = im.convert(mode.get(im.mode, "RGB"))
                arr = np.asarray(im)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as e:
        raise DataError(
            f"{where}: cannot decode image ({e.__class__.__name__}: {str(e)[:80]}); "
            "the file is corrupt or truncated: replace or remove it"
        ) from None
    return arr[..., None] if arr.ndim == 2 else arr


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


def encode_png(images: np.ndarray, compress_level: int = 1) -> list[bytes]:
    """uint8 (N, H, W, C) -> N PNG byte strings (grayscale for C=1, RGB for C=3)."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    squeeze = images.shape[-1] == 1
    out = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if squeeze else img).save(buf, format="PNG", compress_level=compress_level)
        out.append(buf.getvalue())
    return out


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
