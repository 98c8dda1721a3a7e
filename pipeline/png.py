"""The one PNG codec: uint8 (N, H, W, C) batches -> PNG bytes, and image bytes -> uint8 HWC.

`stored_png_array`/`png_array` build the stored (undeflated) PNGs of Parquet shards in one numpy
buffer, `encode_png_batch` deflates a batch with one zlib call per image (loose files),
`encode_png` is Pillow's encoder (the sample grid), and `decode` reads PNG, JPEG or any format
Pillow knows, naming the file or row at fault.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from pipeline.errors import DataError
from pipeline.cores import available_cores

# Images past this many pixels are refused before decoding (decompression bombs).
MAX_PIXELS = 64_000_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# below this many images per thread, a thread costs more than it saves
PNG_ROWS_PER_THREAD = 256
# PNGs inside Parquet are stored, not deflated: the file's zstd then compresses across rows. On
# 10,000 images (2-core AMX Xeon) that made MNIST shards smaller than level-6 PNGs did (180 vs 199
# bytes/row) and GTSRB ones 2% larger (2,560 vs 2,501); on 10,000 samples of the GTSRB-LT GAN
# 3% smaller (2,844 vs 2,921). `stored_png_array` builds them at about 1.3 us per MNIST image,
# against 20 us for level 6. Loose files (the ImageFolder export) have no zstd around them: level 6.
PNG_LEVEL_IN_PARQUET = 0
PNG_LEVEL_LOOSE = 6


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """length, type, data, CRC-32 of type + data (PNG spec, section 5.3)."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _check_batch(images: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected uint8 (N, H, W, C) with C in (1, 3), got {images.dtype} {images.shape}")


def _png_frame(h: int, w: int, c: int) -> tuple[bytes, bytes]:
    """(signature + IHDR, IEND chunk) of every PNG of an H x W x C batch."""
    # IHDR: width, height, bit depth 8, colour type 0 (gray) or 2 (RGB), deflate, filter 0, no interlace
    head = PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0 if c == 1 else 2, 0, 0, 0))
    return head, _png_chunk(b"IEND", b"")


def _scanlines(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H * (1 + W*C)): each image's rows, each after filter byte 0 ("None"), by numpy."""
    n, h, w, c = images.shape
    raw = np.zeros((n, h, 1 + w * c), dtype=np.uint8)
    raw[:, :, 1:] = images.reshape(n, h, w * c)
    return raw.reshape(n, h * (1 + w * c))


# a stored deflate block holds at most this many bytes (RFC 1951, 3.2.4: LEN is 16 bits)
STORED_BLOCK = 65535
# zlib stream header: deflate, 32 KiB window, check bits, "fastest" level (RFC 1950, 2.2)
_ZLIB_HEADER = b"\x78\x01"


def stored_png_array(images: np.ndarray) -> pa.BinaryArray:
    """uint8 (N, H, W, C), C in (1, 3) -> N PNG files with stored (uncompressed) deflate blocks, as
    one Arrow binary array: PNG_LEVEL_IN_PARQUET's format, built without a Python step per image
    but the two checksums.

    All images share a shape, so every file has the same length and layout: numpy writes the
    constant parts and the scanlines of the whole batch into one buffer, zlib's C adler32 and crc32
    fill in each file's checksums, and Arrow takes the buffer as it is. Any PNG decoder reads the
    result (the zlib stream is RFC 1950/1951 stored blocks of at most 65,535 bytes).
    """
    _check_batch(images)
    n, h, w, c = images.shape
    head, tail = _png_frame(h, w, c)
    size = h * (1 + w * c)
    nblocks = max(1, -(-size // STORED_BLOCK))
    zlen = len(_ZLIB_HEADER) + 5 * nblocks + size + 4  # header, block headers, data, adler32
    length = len(head) + 8 + zlen + 4 + len(tail)  # + IDAT length and type, + its CRC
    if n * length >= 2**31:
        raise ValueError(f"{n} PNGs of {length} bytes exceed an Arrow binary array's 2 GiB; encode fewer at once")
    raw = _scanlines(images)
    out = np.empty((n, length), dtype=np.uint8)

    def put(at: int, data: bytes | np.ndarray) -> int:
        block = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data
        out[:, at : at + block.shape[-1]] = block
        return at + block.shape[-1]

    pos = put(0, head)
    pos = put(pos, struct.pack(">I", zlen) + b"IDAT")
    idat = pos - 4  # the CRC covers the chunk type and its data
    pos = put(pos, _ZLIB_HEADER)
    for k in range(nblocks):
        a, b = k * STORED_BLOCK, min(size, (k + 1) * STORED_BLOCK)
        pos = put(pos, struct.pack("<BHH", k == nblocks - 1, b - a, (b - a) ^ 0xFFFF))  # BFINAL, BTYPE 00, LEN, NLEN
        pos = put(pos, raw[:, a:b])
    adler_at, crc_at = pos, pos + 4
    put(crc_at + 4, tail)
    flat = memoryview(raw.reshape(-1))  # contiguous
    adler = np.fromiter((zlib.adler32(flat[i * size : (i + 1) * size]) for i in range(n)), np.uint32, n)
    out[:, adler_at:crc_at] = adler.astype(">u4").view(np.uint8).reshape(n, 4)
    buf = memoryview(out.reshape(-1))
    crc = np.fromiter((zlib.crc32(buf[i * length + idat : i * length + crc_at]) for i in range(n)), np.uint32, n)
    out[:, crc_at : crc_at + 4] = crc.astype(">u4").view(np.uint8).reshape(n, 4)
    offsets = np.arange(n + 1, dtype=np.int32) * length
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(out.reshape(-1))])


def png_array(images: np.ndarray, level: int = PNG_LEVEL_IN_PARQUET) -> pa.BinaryArray:
    """The PNGs of `encode_png_batch` as an Arrow binary array (level 0: `stored_png_array`)."""
    return stored_png_array(images) if level == 0 else pa.array(encode_png_batch(images, level), type=pa.binary())


def encode_png_batch(
    images: np.ndarray, level: int = PNG_LEVEL_IN_PARQUET, threads: int | None = None
) -> list[bytes]:
    """uint8 (N, H, W, C), C in (1, 3) -> N PNG files (8-bit grayscale or RGB), about 5x Pillow's speed.

    `level` is zlib's. Level 0 (PNG_LEVEL_IN_PARQUET) stores the pixels uncompressed: the files
    of `stored_png_array`. Levels 1-9 deflate each image's scanlines (laid out for the whole batch
    by numpy) with one zlib call: with many small images Pillow's per-call overhead, not
    compression, is the cost. zlib releases the GIL while it compresses, so contiguous slices of
    the batch are encoded in `threads` threads (None: the cores this process may use); the bytes do
    not depend on the thread count. Output is plain PNG any decoder reads.
    """
    if level == 0:
        return stored_png_array(images).to_pylist()
    _check_batch(images)
    head, tail = _png_frame(*images.shape[1:])
    raw = _scanlines(images)
    idat_crc = zlib.crc32(b"IDAT")

    def encode(part: np.ndarray) -> list[bytes]:
        out = []
        for scanlines in part:
            z = zlib.compress(scanlines.tobytes(), level)
            out.append(b"".join((head, struct.pack(">I", len(z)), b"IDAT", z,
                                 struct.pack(">I", zlib.crc32(z, idat_crc)), tail)))
        return out

    threads = min(threads or available_cores(), max(1, len(raw) // PNG_ROWS_PER_THREAD))
    if threads <= 1:
        return encode(raw)
    with ThreadPoolExecutor(threads) as pool:
        return [png for part in pool.map(encode, np.array_split(raw, threads)) for png in part]


def encode_png(images: np.ndarray, compress_level: int = 1) -> list[bytes]:
    """uint8 (N, H, W, C) -> N PNG byte strings (grayscale for C=1, RGB for C=3), by Pillow.

    Pillow chooses a filter per scanline, so its files differ from `encode_png_batch`'s (filter 0
    throughout) at the same level: the sample grid is written with this one, and its bytes are kept.
    """
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    squeeze = images.shape[-1] == 1
    out = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if squeeze else img).save(buf, format="PNG", compress_level=compress_level)
        out.append(buf.getvalue())
    return out


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
