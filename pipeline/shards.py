"""Image tables as Parquet in the Hugging Face image layout: writing, reading, checking.

`write_parquet`/`read_parquet` store one `ImageTable` (the prepared splits); `write_shards` writes
the synthetic dataset folder (shards, optional ImageFolder export, manifest, dataset card) and
`load` reads it back as a torch Dataset, a pandas DataFrame or a pyarrow Table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import unicodedata
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from pipeline import images as imgcodec
from pipeline import io
from pipeline.data import ImageTable
from pipeline.errors import DataError, StorageError
from pipeline.parallel import available_cores

HF_METADATA_KEY = b"huggingface"
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
REQUIRED_COLUMNS = ("image", "label")
EXPECTED_SCHEMA = "image: struct<bytes: binary (PNG/JPEG), path: string>, label: int64, [label_name: string]"
# Column holding `ImageTable.groups` (e.g. GTSRB track ids) so a round trip keeps them.
GROUP_COLUMN = "group"


# ---- Hugging Face features -------------------------------------------------------------------------

def _hf_value_dtype(arrow_type: pa.DataType) -> str:
    """Arrow type -> the `datasets.Value` dtype string (e.g. int64, float32, string)."""
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "binary"
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_floating(arrow_type):
        return f"float{arrow_type.bit_width}"
    return str(arrow_type)  # int8..int64, uint8..uint64 are spelled alike


def hf_features(schema: pa.Schema, class_names: list[str] | tuple[str, ...]) -> dict:
    """The `datasets` Features dict for an image table schema: Image, ClassLabel, then Values."""
    features: dict[str, dict] = {}
    for f in schema:
        if f.name == "image":
            features["image"] = {"_type": "Image"}
        elif f.name == "label":
            features["label"] = {"names": list(class_names), "_type": "ClassLabel"}
        else:
            features[f.name] = {"dtype": _hf_value_dtype(f.type), "_type": "Value"}
    return features


def _with_hf_metadata(table: pa.Table, class_names) -> pa.Table:
    meta = {"info": {"features": hf_features(table.schema, class_names)}}
    return table.replace_schema_metadata({HF_METADATA_KEY: json.dumps(meta, ensure_ascii=False)})


# ---- writing -----------------------------------------------------------------------------------------

def _image_column(png: pa.BinaryArray, paths: list[str] | None) -> pa.StructArray:
    return pa.StructArray.from_arrays(
        [png, pa.array(paths if paths is not None else [None] * len(png), type=pa.string())],
        fields=list(IMAGE_TYPE),
    )


def _extra_array(name: str, values, n: int) -> pa.Array:
    arr = pa.array(values) if not isinstance(values, pa.Array) else values
    if len(arr) != n:
        raise ValueError(f"extra column {name!r} has {len(arr)} values for {n} rows")
    return arr


def table_to_arrow(
    table: ImageTable,
    extra: dict[str, np.ndarray | list] | None = None,
    paths: list[str] | None = None,
) -> pa.Table:
    """An `ImageTable` as an Arrow table in the Hugging Face image layout.

    Args:
        table: the images (encoded to PNG at PNG_LEVEL_IN_PARQUET here) and labels.
        extra: further columns, one value per row (e.g. `source`, `seed`, `score`).
        paths: the `image.path` of each row (None: null paths).

    Returns:
        Columns `image` (struct bytes/path), `label` (int64), `label_name` (string), `group` when
        the table has groups, then `extra`; the `datasets` features in the schema metadata.
    """
    n = len(table)
    png = png_array(table.images)
    names = np.asarray(table.class_names, dtype=object)
    columns: dict[str, pa.Array] = {
        "image": _image_column(png, paths),
        "label": pa.array(table.labels, type=pa.int64()),
        "label_name": pa.array(names[table.labels].tolist() if n else [], type=pa.string()),
    }
    if table.groups is not None:
        columns[GROUP_COLUMN] = pa.array(np.asarray(table.groups))
    for name, values in (extra or {}).items():
        if name in columns:
            raise ValueError(f"extra column {name!r} clashes with a layout column")
        columns[name] = _extra_array(name, values, n)
    return _with_hf_metadata(pa.table(columns), table.class_names)


def write_arrow(path: str | Path, table: pa.Table, row_group_size: int | None = None) -> dict:
    """Write an Arrow table as zstd Parquet atomically; return {"path", "rows", "sha256"}."""
    path = Path(path)
    with io.atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
    return {"path": str(path), "rows": table.num_rows, "sha256": io.sha256_file(path)}


def write_parquet(path: str | Path, table: ImageTable, extra: dict[str, np.ndarray | list] | None = None) -> dict:
    """Write `table` (plus `extra` columns) to `path` in the HF image layout, atomically, zstd.

    Returns:
        {"path": str, "rows": int, "sha256": hex digest of the written file}.
    """
    return write_arrow(path, table_to_arrow(table, extra))


# ---- reading -----------------------------------------------------------------------------------------

def _open_parquet(path: Path) -> pq.ParquetFile:
    if not path.is_file():
        raise DataError(f"{path}: Parquet file not found")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(
            f"{path}: not a readable Parquet file ({str(e)[:80]}); the file is corrupt or truncated"
        ) from None


def hf_class_names(schema: pa.Schema) -> list[str] | None:
    """ClassLabel names of the `label` column from the `huggingface` schema metadata, if any."""
    raw = (schema.metadata or {}).get(HF_METADATA_KEY)
    if raw is None:
        return None
    try:
        features = json.loads(raw)["info"]["features"]
        label = features["label"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return None
    if isinstance(label, dict) and label.get("_type") == "ClassLabel" and isinstance(label.get("names"), list):
        return [str(n) for n in label["names"]]
    return None


def _check_columns(path: Path, schema: pa.Schema) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)} (found {', '.join(schema.names)}); "
            f"expected the Hugging Face image layout {EXPECTED_SCHEMA}"
        )
    image_type = schema.field("image").type
    if not (pa.types.is_struct(image_type) and image_type.get_field_index("bytes") >= 0) and not (
        pa.types.is_binary(image_type) or pa.types.is_large_binary(image_type)
    ):
        raise DataError(f"{path}: column image has type {image_type}; expected {EXPECTED_SCHEMA}")


def _first_null(arr: pa.Array) -> int | None:
    if arr.null_count == 0:
        return None
    return int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])


def _labels_and_names(path: Path, table: pa.Table, class_names: list[str] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer labels and class names from ClassLabel metadata, `label_name`, or `class_names`."""
    label = table.column("label").combine_chunks()
    bad = _first_null(label)
    if bad is not None:
        raise DataError(f"{path} row {bad}: label is null; every row needs a label")
    meta_names = hf_class_names(table.schema)
    if pa.types.is_string(label.type) or pa.types.is_large_string(label.type):
        # labels stored as names: classes are the given ones, else the metadata's, else sorted uniques
        text = label.to_pylist()
        names = list(class_names or meta_names or sorted(set(text)))
        index = {n: i for i, n in enumerate(names)}
        unknown = next((i for i, t in enumerate(text) if t not in index), None)
        if unknown is not None:
            raise DataError(f"{path} row {unknown}: label {text[unknown]!r} is not one of the classes {names}")
        return np.fromiter((index[t] for t in text), dtype=np.int64, count=len(text)), tuple(names)
    if not pa.types.is_integer(label.type):
        raise DataError(f"{path}: column label has type {label.type}; expected int64 (or string class names)")
    labels = label.to_numpy().astype(np.int64)
    names = meta_names or _names_from_label_name(path, table, labels)
    if class_names is not None:
        if names is not None and list(names) != list(class_names):
            raise DataError(f"{path}: class names {list(names)} differ from the expected {list(class_names)}")
        names = list(class_names)
    if names is None:
        names = [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0)]
    out = np.flatnonzero((labels < 0) | (labels >= len(names)))
    if len(out):
        i = int(out[0])
        raise DataError(f"{path} row {i}: label {labels[i]} out of range 0..{len(names) - 1} ({len(names)} classes)")
    return labels, tuple(names)


def _names_from_label_name(path: Path, table: pa.Table, labels: np.ndarray) -> list[str] | None:
    """Class names from a `label_name` column: every label must map to one name."""
    if "label_name" not in table.schema.names or not len(labels):
        return None
    text = table.column("label_name").to_pylist()
    names: dict[int, str] = {}
    for i, (lab, name) in enumerate(zip(labels.tolist(), text)):
        if names.setdefault(lab, name) != name:
            raise DataError(f"{path} row {i}: label {lab} is named {name!r} here but {names[lab]!r} earlier")
    k = max(names) + 1
    missing = [c for c in range(k) if c not in names]
    if missing or min(names) < 0:
        return None  # classes without a row: names cannot be known; fall back to indices
    return [str(names[c]) for c in range(k)]


def _image_bytes(path: Path, table: pa.Table) -> list:
    col = table.column("image").combine_chunks()
    if pa.types.is_struct(col.type):
        data = col.field("bytes")
        # a null struct, or a null bytes field, are both "no image"
        if col.null_count:
            data = pc.if_else(col.is_null(), pa.scalar(None, data.type), data)
    else:
        data = col
    bad = _first_null(data)
    if bad is not None:
        where = ""
        if pa.types.is_struct(col.type) and col[bad].is_valid and col.field("path")[bad].is_valid:
            where = f" (path {col.field('path')[bad].as_py()!r} only; embed the image bytes)"
        raise DataError(f"{path} row {bad}: image is null{where}; every row needs its image bytes")
    return data.to_pylist()


def decode_images(
    data: list[bytes], where: str, size: int | None = None, channels: int | None = None, resize: bool = True
) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 (N, H, W, C) at one size; errors name `where` and the row."""
    out = []
    for i, b in enumerate(data):
        row = f"{where} row {i}"
        out.append(imgcodec.conform(imgcodec.decode(b, row), row, size, channels, resize))
    if not out:
        c = channels or 1
        return np.zeros((0, size or 1, size or 1, c), dtype=np.uint8)
    return imgcodec.stack(out, where)


def read_arrow(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """The raw Arrow table of a Parquet file (schema metadata kept); DataError if unreadable."""
    path = Path(path)
    pf = _open_parquet(path)
    try:
        return pf.read(columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: cannot read Parquet data ({str(e)[:80]}); the file is corrupt or truncated") from None


def read_parquet(
    path: str | Path,
    image_size: int | None = None,
    channels: int | None = None,
    resize: bool = True,
    class_names: list[str] | None = None,
) -> ImageTable:
    """Read a Parquet file in the Hugging Face image layout into an `ImageTable`.

    Args:
        path: the file.
        image_size: square size to bring images to (None keeps theirs; they must then agree).
        channels: 1 or 3 (None keeps theirs; RGBA becomes RGB).
        resize: False makes an image of another size an error instead of resizing it.
        class_names: the expected classes; the file's names (ClassLabel metadata or `label_name`)
            must equal them. Without them the file's names are used, else "0".."K-1".

    Raises:
        DataError: unreadable file, missing columns, null or out-of-range labels, null or corrupt
            images, images of different shapes; the message names the file and row.
    """
    path = Path(path)
    schema = _open_parquet(path).schema_arrow
    _check_columns(path, schema)
    wanted = [c for c in ("image", "label", "label_name", GROUP_COLUMN) if c in schema.names]
    table = read_arrow(path, wanted)
    labels, names = _labels_and_names(path, table, class_names)
    pixels = decode_images(_image_bytes(path, table), str(path), image_size, channels, resize)
    groups = None
    if GROUP_COLUMN in table.schema.names:
        groups = table.column(GROUP_COLUMN).to_numpy(zero_copy_only=False)
    return ImageTable(pixels, labels, names, groups)


# ---- the synthetic dataset folder ---------------------------------------------------------------

MANIFEST = "manifest.json"
CARD = "README.md"
GRID = "sample_grid.png"
CLASSES = "classes.json"  # the class names in label order (label i = CLASSES[i])
IMAGES_DIR = "images"
# The shards sit in their own folder, so `pd.read_parquet("<release>/data")` and
# `pq.read_table(...)` see Parquet files only (the Hugging Face Hub layout: data/train-*.parquet).
SHARDS_DIR = "data"
# An exported class folder without images holds this file only, so copies that keep files, not
# folders (DVC, git), keep the folder, and ImageFolder's numbering stays the labels'.
EMPTY_MARKER = ".keep"
SHARD_RE = re.compile(r"train-\d{5}-of-\d{5}\.parquet")
# New files are first written under these names (ignored by globs, removed by a rerun), then
# renamed into place in one short switch.
STAGE_PREFIX = io.TMP_PREFIX + "stage-"
# Windows refuses these as file names whatever the extension; exported class folders avoid them.
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
MAX_NAME_BYTES = 200
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


def shard_name(index: int, count: int) -> str:
    """`train-00003-of-00010.parquet`: the Hugging Face shard naming."""
    return f"train-{index:05d}-of-{count:05d}.parquet"


def shard_bounds(rows: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, stop) row ranges of at most `shard_size` rows; one empty shard when `rows` is 0."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [(a, min(a + shard_size, rows)) for a in range(0, rows, shard_size)] or [(0, 0)]


def safe_dir_name(name: str) -> str:
    """A class name as one safe path component: no separators, NUL/control chars, `..` or leading dot.

    Letters of any script are kept (NFC-normalised); unsafe characters become `_`; the result is
    at most MAX_NAME_BYTES bytes of UTF-8 and never empty, `.`/`..`, hidden, or a Windows device name.
    """
    s = _UNSAFE_CHARS.sub("_", unicodedata.normalize("NFC", str(name))).strip()
    s = re.sub(r"^\.+", lambda m: "_" * len(m.group()), s)  # "..", ".hidden" -> "__", "_hidden"
    while len(s.encode("utf-8")) > MAX_NAME_BYTES:
        s = s[:-1]
    s = s.rstrip(". ") or "_"  # trailing dots/spaces vanish on Windows
    if s.split(".")[0].lower() in _RESERVED:
        s = "_" + s
    return s


def safe_class_dirs(class_names: list[str] | tuple[str, ...]) -> dict[str, str]:
    """{class name: folder name}, each safe and unique even on case-insensitive file systems."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for name in class_names:
        base = safe_dir_name(name)
        candidate, k = base, 2
        while candidate.casefold() in taken:
            candidate, k = f"{base}-{k}", k + 1
        taken.add(candidate.casefold())
        out[name] = candidate
    return out


def export_class_dirs(class_names: list[str] | tuple[str, ...]) -> dict[str, str]:
    """{class name: ImageFolder folder name}: `<label>-<safe name>`, the label zero-padded.

    torchvision's ImageFolder numbers the folders in sorted order, so the label prefix makes its
    index of every folder equal to the shards' `label` (the prefix also makes the names unique).
    """
    width = len(str(max(len(class_names) - 1, 0)))
    return {name: f"{i:0{width}d}-{safe_dir_name(name)}" for i, name in enumerate(class_names)}


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


def _column_array(name: str, value, n: int) -> pa.Array:
    """One extra column: a scalar is repeated on every row; float NaN is stored as null (unknown)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        # the scalar's own type, so that even a 0-row shard has a typed column
        return pa.array([value] * n, type=None if value is None else pa.scalar(value).type)
    arr = np.asarray(value)
    if len(arr) != n:
        raise ValueError(f"column {name!r} has {len(arr)} values for {n} rows")
    if np.issubdtype(arr.dtype, np.floating):
        return pa.array(arr, from_pandas=True)
    return pa.array(arr.tolist() if arr.dtype == object else arr)


def sample_grid(images: np.ndarray, labels: np.ndarray, num_classes: int, per_class: int = 8) -> np.ndarray:
    """uint8 (H', W', C) grid: one row per class that has images, its first `per_class` images."""
    h, w, c = images.shape[1:]
    rows = [c_ for c_ in range(num_classes) if (labels == c_).any()]
    grid = np.full((max(1, len(rows)) * (h + 2), per_class * (w + 2), c), 255, dtype=np.uint8)
    for r, cls in enumerate(rows):
        for j, idx in enumerate(np.flatnonzero(labels == cls)[:per_class]):
            grid[r * (h + 2) + 1 : r * (h + 2) + 1 + h, j * (w + 2) + 1 : j * (w + 2) + 1 + w] = images[idx]
    return grid


def _stage(folder: Path, name: str) -> Path:
    return folder / f"{STAGE_PREFIX}{name}"


def _clean_stage(folder: Path) -> None:
    """Remove what a killed run left: temporary files and staged folders (only `.tmp-*` entries)."""
    io.clean_temporaries(folder)
    for p in folder.glob(io.TMP_PREFIX + "*"):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)


def _export_images(stage_dir: Path, images: np.ndarray, rel_paths: list[str], dirs: dict[str, str]) -> None:
    """Write `images/<label>-<class>/<id>.png` under `stage_dir` (renamed into place as a whole
    later), deflated at PNG_LEVEL_LOOSE: unlike the Parquet copies, nothing compresses them further.

    Every class gets its folder, those without images an EMPTY_MARKER file, so ImageFolder's
    class indices are the labels whichever classes the plan filled.
    """
    stage_dir.mkdir(parents=True, exist_ok=True)
    used = {p.rsplit("/", 1)[0] for p in rel_paths}
    for d in dirs.values():
        (stage_dir / d).mkdir(parents=True, exist_ok=True)
        if d not in used:
            (stage_dir / d / EMPTY_MARKER).write_bytes(b"")
    for data, rel in zip(encode_png_batch(images, PNG_LEVEL_LOOSE), rel_paths):
        # plain writes are enough: the folder is staged and renamed as a whole, atomically
        (stage_dir / rel).write_bytes(data)


def _hf_card_features(features: dict) -> list[dict]:
    """The `datasets` features dict in the dataset-card YAML spelling (`dataset_info.features`)."""
    out = []
    for name, f in features.items():
        if f["_type"] == "Image":
            out.append({"name": name, "dtype": "image"})
        elif f["_type"] == "ClassLabel":
            names = {str(i): n for i, n in enumerate(f["names"])}
            out.append({"name": name, "dtype": {"class_label": {"names": names}}})
        else:
            out.append({"name": name, "dtype": f["dtype"]})
    return out


def _md_cell(text: str) -> str:
    """Text safe inside a Markdown table cell (pipes escaped, no line breaks)."""
    return re.sub(r"[\x00-\x1f]", " ", str(text)).replace("|", "\\|")


def dataset_card(manifest: dict) -> str:
    """README.md for the synthetic folder: HF YAML header (features, splits, files) + a short card."""
    header = {
        "license": "other",
        "task_categories": ["image-classification"],
        "tags": ["synthetic", "gan", "class-imbalance"],
        "pretty_name": "augment synthetic samples",
        "configs": [{"config_name": "default",
                     "data_files": [{"split": "train", "path": f"{SHARDS_DIR}/train-*.parquet"}]}],
        "dataset_info": {
            "features": _hf_card_features(manifest["features"]),
            "splits": [{"name": "train", "num_bytes": manifest["num_bytes"], "num_examples": manifest["rows"]}],
        },
    }
    gen = manifest.get("generator")
    gen_text = gen if isinstance(gen, str) else json.dumps(gen, sort_keys=True, ensure_ascii=False)
    dirs = (manifest.get("images") or {}).get("class_dirs") or {}
    counts = "\n".join(
        f"| {i} | {_md_cell(name)} | {n} |" + (f" `{IMAGES_DIR}/{_md_cell(dirs[name])}/` |" if dirs else "")
        for i, (name, n) in enumerate(manifest["counts"].items()))
    folder_head, folder_rule = (" ImageFolder folder |", "---|") if dirs else ("", "")
    image_folder = f"""
**ImageFolder.** `images/<label>-<class>/` holds every class, also those without images (a
`{EMPTY_MARKER}` file keeps such a folder), so `torchvision.datasets.ImageFolder("images",
allow_empty=True)` numbers the classes as the shards' `label`.
""" if dirs else ""
    params = json.dumps(manifest.get("params", {}), indent=2, sort_keys=True, ensure_ascii=False)
    precision = f", run in {manifest['precision']}" if isinstance(manifest.get("precision"), str) else ""
    body = f"""# augment synthetic samples

**What.** {manifest['rows']} images made by a class-conditional GAN (EMA generator) to fill the
per-class quotas of `plan.json`, so that an imbalanced training set can be balanced.
Each row has `image` (PNG), `label` / `label_name`, `source` ("synthetic"), `generator` (sha256 of
the checkpoint), `seed` (the per-sample seed: the same run seed, class and index give the same
image) and `score` (the quality filter's probability of the intended class; null when unfiltered).

**How made.** augment {manifest['package']['version']}; generator: `{gen_text}`{precision}.
The shards are `{SHARDS_DIR}/train-*.parquet`. Files, row counts and sha256 are in `manifest.json`
(`augment` verifies them with `pipeline.shards.load(path, verify=True)`). Parameters:

```json
{params}
```

**Labels and counts** (also in `{CLASSES}`: the class names in label order).

| label | class | images |{folder_head}
|---|---|---|{folder_rule}
{counts}
{image_folder}
**Samples** (one row per class): ![samples]({GRID})

**Intended use.** Extra training data for the minority classes, mixed with the real training split
(`pipeline.shards.load(path, mix="real+synthetic")`). Not for evaluation: test on real data only.
Check the report's downstream gain before relying on these images; they can copy or distort the
real images they were learnt from.

**License.** These images are derived from the real training data through the GAN and inherit its
license and terms of use; they add none of their own.
"""
    return "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n" + body


def _shard_tables(
    images: np.ndarray, labels: np.ndarray, class_names, columns: dict, export_images: bool, shard_size: int,
) -> tuple[int, Iterator[pa.Table], list[str], dict[str, str]]:
    """How many shards, their Arrow tables, made one at a time as they are consumed (so no Arrow
    array outgrows its 2 GiB offsets however large the dataset), the ImageFolder paths and class folders."""
    table = ImageTable(images, labels, class_names)
    n = len(table)
    dirs = export_class_dirs(table.class_names)
    width = max(6, len(str(max(n - 1, 0))))
    rel = [f"{dirs[table.class_names[lab]]}/{r:0{width}d}.png" for r, lab in enumerate(table.labels.tolist())]
    paths = [f"{IMAGES_DIR}/{p}" for p in rel] if export_images else [p.split("/", 1)[1] for p in rel]
    extra = {name: _column_array(name, value, n) for name, value in columns.items()}

    bounds = shard_bounds(n, shard_size)

    def shards() -> Iterator[pa.Table]:
        for a, b in bounds:
            part = ImageTable(table.images[a:b], table.labels[a:b], table.class_names)
            yield table_to_arrow(part, {k: v.slice(a, b - a) for k, v in extra.items()}, paths=paths[a:b])

    return len(bounds), shards(), rel, dirs


def synthetic_columns(generator_sha256: str, seeds: np.ndarray, scores: np.ndarray) -> dict:
    """The synthetic rows' extra columns in their documented order: source, generator, seed, score."""
    return {"source": "synthetic", "generator": generator_sha256, "seed": np.asarray(seeds, dtype=np.int64),
            "score": np.asarray(scores, dtype=np.float32)}


def write_shards(
    folder: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str] | tuple[str, ...],
    columns: dict,
    shard_size: int,
    manifest_extra: dict,
    export_images: bool = False,
) -> dict:
    """Write the synthetic dataset folder: `data/` Parquet shards, `classes.json`, optional
    ImageFolder, card, manifest.

    Every file is staged under a `.tmp-` name first; then, in one short switch, the old manifest
    is removed (the folder is no longer "complete"), stale shards of an earlier run are deleted,
    staged files are renamed into place, and the new manifest is written last. A run killed while
    staging leaves the previous dataset intact; a rerun removes the leftovers.

    Args:
        folder: e.g. `data/synthetic`; created if needed.
        images: uint8 (N, H, W, C).
        labels: int (N,) indices into `class_names`.
        class_names: all classes (the ClassLabel names), also those without rows.
        columns: extra columns, each a scalar (repeated) or one value per row, in order; for
            generated rows `synthetic_columns(meta["sha256"], seeds, scores)`. Float NaN is
            stored as null.
        shard_size: rows per shard.
        manifest_extra: merged into the manifest (e.g. plan, params, generator).
        export_images: also write `images/<label>-<class>/<id>.png` (torchvision ImageFolder;
            every class has its folder).

    Returns:
        The manifest (also written to `folder/manifest.json`).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _clean_stage(folder)
    try:
        staged, manifest = _stage_dataset(folder, images, labels, class_names, columns, shard_size, manifest_extra,
                                          export_images)
    except BaseException as e:
        full = io.is_disk_full(e, folder)
        _clean_stage(folder)  # e.g. a full disk: leave no part of the new dataset behind, only the old one
        if full:
            raise StorageError(f"{folder}: no space left on the device while writing the new dataset; free some "
                               "space and rerun (the previous dataset is unchanged)") from e
        raise
    _switch(folder, staged, manifest)
    return manifest


def _stage_dataset(
    folder: Path, images: np.ndarray, labels: np.ndarray, class_names, columns: dict, shard_size: int,
    manifest_extra: dict, export_images: bool,
) -> tuple[list[tuple[Path, str]], dict]:
    """Write every file of the new dataset under its staged name; return (staged, name) pairs and the manifest."""
    count, tables, rel, dirs = _shard_tables(images, labels, class_names, columns, export_images, shard_size)
    staged: list[tuple[Path, str]] = []
    files = []
    num_bytes = 0
    for k, arrow in enumerate(tables):
        name = shard_name(k, count)
        info = write_arrow(_stage(folder, name), arrow)
        files.append({"path": f"{SHARDS_DIR}/{name}", "rows": info["rows"], "sha256": info["sha256"]})
        staged.append((_stage(folder, name), f"{SHARDS_DIR}/{name}"))
        num_bytes += arrow.nbytes
    if export_images:
        _export_images(_stage(folder, IMAGES_DIR), np.asarray(images), rel, dirs)
        staged.append((_stage(folder, IMAGES_DIR), IMAGES_DIR))
    table_names = tuple(str(c) for c in class_names)
    io.write_text(_stage(folder, CLASSES), json.dumps(list(table_names), indent=2, ensure_ascii=False) + "\n")
    staged.append((_stage(folder, CLASSES), CLASSES))
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(table_names))
    manifest = _manifest(arrow.schema, num_bytes, files, table_names, counts, dirs if export_images else None,
                         manifest_extra)
    grid = sample_grid(np.asarray(images), np.asarray(labels), len(table_names)) if len(images) else None
    if grid is not None:
        io.write_bytes(_stage(folder, GRID), imgcodec.encode_png(grid[None], compress_level=6)[0])
        staged.append((_stage(folder, GRID), GRID))
    io.write_text(_stage(folder, CARD), dataset_card(manifest))
    staged.append((_stage(folder, CARD), CARD))
    return staged, manifest


_RESERVED_KEYS = (
    "format", "files", "rows", "num_bytes", "class_names", "counts", "features", "columns", "images", "package",
)


def _manifest(
    schema: pa.Schema, num_bytes: int, files: list, names: tuple, counts: np.ndarray, dirs: dict | None, extra: dict,
) -> dict:
    clash = sorted(set(extra) & set(_RESERVED_KEYS))
    if clash:
        raise ValueError(f"manifest_extra keys {clash} clash with the manifest's own keys {list(_RESERVED_KEYS)}")
    from pipeline import __version__

    images = None
    if dirs is not None:  # every class, in label order: ImageFolder's index of each folder is its label
        images = {"folder": IMAGES_DIR, "class_dirs": dict(dirs)}
    return {
        "format": "augment-synthetic/1",
        "files": files,
        "rows": sum(f["rows"] for f in files),
        "num_bytes": int(num_bytes),
        "class_names": list(names),
        "counts": {n: int(c) for n, c in zip(names, counts)},
        "features": hf_features(schema, names),
        "columns": list(schema.names),
        "images": images,
        "package": {"name": "augment", "version": __version__},
        **extra,
    }


def _old_listed_files(folder: Path) -> set[str]:
    """Paths the current manifest lists (to remove when they are not in the new one)."""
    try:
        old = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        return {f["path"] for f in old.get("files", []) if isinstance(f, dict) and "path" in f}
    except (OSError, ValueError, AttributeError):
        return set()


def _switch(folder: Path, staged: list[tuple[Path, str]], manifest: dict) -> None:
    """Replace the folder's dataset by the staged files; the manifest goes last.

    `staged` pairs a staged file with its path in the folder (`data/<shard>`, `README.md`, ...).
    """
    keep = set(dict(staged).values())
    old_listed = _old_listed_files(folder)
    (folder / MANIFEST).unlink(missing_ok=True)
    # stale shards: those of the earlier run, and any shard-named file that the new manifest lacks
    # (in data/, and at the top where releases before 0.4.0 kept them)
    shard_dir = folder / SHARDS_DIR
    if shard_dir.is_symlink() or (shard_dir.exists() and not shard_dir.is_dir()):
        shard_dir.unlink()
    for where in (folder, shard_dir):
        for p in (where.iterdir() if where.is_dir() else ()):
            rel = p.relative_to(folder).as_posix()
            listed = rel in old_listed or SHARD_RE.fullmatch(p.name)
            if listed and rel not in keep and p.is_file() and not p.is_symlink():
                p.unlink()
    old_images = folder / IMAGES_DIR
    if old_images.is_dir() and not old_images.is_symlink():
        trash = _stage(folder, "old-" + IMAGES_DIR)
        os.replace(old_images, trash)
        shutil.rmtree(trash)
    shard_dir.mkdir(exist_ok=True)
    for src, rel in staged:
        os.replace(src, folder / rel)
    if GRID not in keep:
        (folder / GRID).unlink(missing_ok=True)
    io.write_json(folder / MANIFEST, manifest)


# ---- reading the synthetic folder ---------------------------------------------------------------

LOAD_AS = ("torch", "pandas", "arrow", "table")
MIXES = (None, "real+synthetic")


def _folder_of(path: str | Path) -> Path:
    path = Path(path)
    return path.parent if path.name == MANIFEST else path


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a synthetic folder (or of `.../manifest.json`), its file list checked.

    Raises:
        DataError: no manifest (the folder is incomplete: a run was interrupted, or it is not a
            synthetic dataset), invalid JSON, or a file entry that is malformed or leaves the folder.
    """
    folder = _folder_of(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise DataError(
            f"{path}: not found; {folder} is not a finished synthetic dataset "
            "(an interrupted run leaves none): run `augment generate`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); rerun `augment generate`") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list):
        raise DataError(f"{path}: no 'files' list; expected files: [{{path, sha256, rows}}]")
    for i, entry in enumerate(files):
        if not (isinstance(entry, dict) and {"path", "sha256", "rows"} <= set(entry)):
            raise DataError(f"{path}: files[{i}] = {entry!r}; expected {{path, sha256, rows}}")
        rel = Path(entry["path"])
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise DataError(f"{path}: files[{i}].path {entry['path']!r} is not a path inside {folder}")
    return manifest


def _manifest_paths(folder: Path, manifest: dict, verify: bool) -> list[Path]:
    out = []
    for entry in manifest["files"]:
        p = folder / entry["path"]
        if not p.is_file():
            raise DataError(f"{p}: listed in {folder / MANIFEST} but missing; rerun `augment generate` (or dvc pull)")
        if verify and io.sha256_file(p) != entry["sha256"]:
            raise DataError(
                f"{p}: sha256 does not match {folder / MANIFEST}; the file changed or is corrupt: "
                "rerun `augment generate` (or dvc pull)"
            )
        out.append(p)
    return out


def _real_table(synthetic: pa.Table, real: Path) -> pa.Table:
    """The real Parquet with a `source` = "real" column, checked to share the class names."""
    table = read_arrow(real)
    _check_columns(real, table.schema)
    syn_names = hf_class_names(synthetic.schema)
    real_names = hf_class_names(table.schema)
    if syn_names is not None and real_names is not None and syn_names != real_names:
        raise DataError(f"{real}: class names {real_names} differ from the synthetic data's {syn_names}")
    if "source" not in table.schema.names:
        table = table.append_column("source", pa.array(["real"] * table.num_rows, type=pa.string()))
    return table


def load_arrow(
    path: str | Path, mix: str | None = None, real: str | Path | None = None, verify: bool = False
) -> pa.Table:
    """All shards of a synthetic folder as one Arrow table (HF metadata kept); see `load`."""
    if mix not in MIXES:
        raise ValueError(f"mix={mix!r}; valid: {', '.join(map(str, MIXES))}")
    folder = _folder_of(path)
    manifest = read_manifest(folder)
    paths = _manifest_paths(folder, manifest, verify)
    tables = [read_arrow(p) for p in paths]
    for p, t in zip(paths, tables):  # concat_tables would fail with a bare ArrowInvalid
        _check_columns(p, t.schema)
        if not t.schema.remove_metadata().equals(tables[0].schema.remove_metadata()):
            raise DataError(f"{p}: columns {t.schema.names} differ from those of {paths[0].name} "
                            f"({tables[0].schema.names}) or their types do; rerun `augment generate`")
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if mix == "real+synthetic":
        real = Path(real) if real is not None else folder.parent / "prepared" / "train.parquet"
        if not real.is_file():
            raise DataError(f"{real}: real training data not found; run `augment prepare` or pass real=PATH")
        real_table = _real_table(table, real)
        meta = table.schema.metadata
        table = pa.concat_tables([real_table.replace_schema_metadata(None), table.replace_schema_metadata(None)],
                                 promote_options="default")
        table = table.replace_schema_metadata(meta)
    return table


def load(path: str | Path, as_: str = "torch", mix: str | None = None, real: str | Path | None = None,
         verify: bool = False):
    """Read a synthetic dataset folder written by `write_shards`.

    Args:
        path: the folder (e.g. `data/synthetic`) or its `manifest.json`.
        as_: "torch" (an `ImageDataset`: (float CHW in [0, 1], label) items), "pandas" (a
            DataFrame, `image` as {bytes, path} dicts), "arrow" (a pyarrow Table) or "table"
            (an `ImageTable` of decoded pixels).
        mix: None (synthetic only) or "real+synthetic": the real training split first, then the
            synthetic rows, with a `source` column telling them apart.
        real: the real Parquet for `mix`; default `<folder>/../prepared/train.parquet`.
        verify: check every file's sha256 against the manifest first.

    Raises:
        DataError: no manifest, a listed file missing or (with `verify`) changed, class names that
            differ between real and synthetic data, undecodable images.
    """
    if as_ not in LOAD_AS:
        raise ValueError(f"as_={as_!r}; valid: {', '.join(LOAD_AS)}")
    table = load_arrow(path, mix, real, verify)
    if as_ == "arrow":
        return table
    if as_ == "pandas":
        return table.to_pandas()
    where = str(_folder_of(path))
    labels, names = _labels_and_names(Path(where), table, None)
    pixels = decode_images(_image_bytes(Path(where), table), where)
    images = ImageTable(pixels, labels, names)
    if as_ == "table":
        return images
    source = table.column("source").to_pylist() if "source" in table.schema.names else None
    return ImageDataset(images, source=source)


class ImageDataset:
    """A map-style torch dataset over an `ImageTable`: item i is (float (C, H, W) in [0, 1], label).

    Duck-typed (`__len__`/`__getitem__`), so `DataLoader`, `Subset` and `ConcatDataset` take it
    while importing this module does not import torch. `classes`, `class_to_idx` and `targets`
    follow torchvision's ImageFolder; `source[i]` says "real" or "synthetic" when known.
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
        import torch

        # uint8 (H, W, C) -> float (C, H, W) / 255, as torchvision's ToTensor
        x = torch.from_numpy(np.ascontiguousarray(self.table.images[i])).permute(2, 0, 1).float().div_(255.0)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.table.labels[i])
