"""The Arrow/Parquet table layer: image tables in the Hugging Face image layout.

`table_to_arrow`/`write_parquet` store an `ImageTable` (pixels as stored PNGs, labels, class
names as `datasets` ClassLabel metadata); `read_arrow`/`read_parquet`/`decode_table` read such a
file back, checking its columns, labels and images and naming the file and row at fault.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import atomic, images, png
from pipeline.data import ImageTable
from pipeline.errors import DataError

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

def _image_column(data: pa.BinaryArray, paths: list[str] | None) -> pa.StructArray:
    return pa.StructArray.from_arrays(
        [data, pa.array(paths if paths is not None else [None] * len(data), type=pa.string())],
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
        table: the images (encoded to PNG at png.PNG_LEVEL_IN_PARQUET here) and labels.
        extra: further columns, one value per row (e.g. `source`, `seed`, `score`).
        paths: the `image.path` of each row (None: null paths).

    Returns:
        Columns `image` (struct bytes/path), `label` (int64), `label_name` (string), `group` when
        the table has groups, then `extra`; the `datasets` features in the schema metadata.
    """
    n = len(table)
    pngs = png.png_array(table.images)
    names = np.asarray(table.class_names, dtype=object)
    columns: dict[str, pa.Array] = {
        "image": _image_column(pngs, paths),
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
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
    return {"path": str(path), "rows": table.num_rows, "sha256": atomic.sha256_file(path)}


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


def check_columns(path: Path, schema: pa.Schema) -> None:
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
    check_columns(path, schema)
    wanted = [c for c in ("image", "label", "label_name", GROUP_COLUMN) if c in schema.names]
    table = read_arrow(path, wanted)
    decoded = decode_table(table, path, class_names, image_size, channels, resize)
    if GROUP_COLUMN not in table.schema.names:
        return decoded
    groups = table.column(GROUP_COLUMN).to_numpy(zero_copy_only=False)
    return ImageTable(decoded.images, decoded.labels, decoded.class_names, groups)


def decode_table(
    table: pa.Table,
    where: Path,
    class_names: list[str] | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    resize: bool = True,
) -> ImageTable:
    """An Arrow table in the image layout -> an `ImageTable` of decoded pixels (no groups).

    Labels and class names as `read_parquet` reads them; `where` names the file or folder in errors.
    """
    labels, names = _labels_and_names(where, table, class_names)
    pixels = images.decode_images(_image_bytes(where, table), str(where), image_size, channels, resize)
    return ImageTable(pixels, labels, names)
