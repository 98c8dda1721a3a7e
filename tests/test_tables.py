"""Parquet in the Hugging Face image layout (`pipeline.tables`): the round trip, the schema and its
metadata, class names from metadata, `label_name` or strings, and files refused naming file and row."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import atomic, tables
from pipeline.data import ImageTable
from pipeline.errors import DataError
from pipeline.png import encode_png
from test_shards import NAMES, tiny_table

def test_parquet_round_trip_keeps_pixels_labels_names_and_groups(tmp_path):
    t = tiny_table(channels=3)
    t = ImageTable(t.images, t.labels, t.class_names, groups=np.array([5, 5, 6, 7, 7, 8]))
    info = tables.write_parquet(tmp_path / "x.parquet", t, extra={"source": ["real"] * 6})
    assert info["rows"] == 6 and info["path"] == str(tmp_path / "x.parquet")
    assert info["sha256"] == atomic.sha256_file(tmp_path / "x.parquet")
    back = tables.read_parquet(tmp_path / "x.parquet")
    np.testing.assert_array_equal(back.images, t.images)
    np.testing.assert_array_equal(back.labels, t.labels)
    np.testing.assert_array_equal(back.groups, t.groups)
    assert back.class_names == NAMES
    assert not list(tmp_path.glob(".tmp-*"))


def test_schema_is_the_hugging_face_image_layout(tmp_path):
    tables.write_parquet(tmp_path / "x.parquet", tiny_table(), extra={"score": np.zeros(6, np.float32)})
    schema = pq.read_schema(tmp_path / "x.parquet")
    assert schema.names == ["image", "label", "label_name", "score"]
    assert schema.field("image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert schema.field("label").type == pa.int64()
    assert json.loads(schema.metadata[b"huggingface"]) == {"info": {"features": {
        "image": {"_type": "Image"},
        "label": {"names": ["zero", "one", "two"], "_type": "ClassLabel"},
        "label_name": {"dtype": "string", "_type": "Value"},
        "score": {"dtype": "float32", "_type": "Value"},
    }}}
    rows = pq.read_table(tmp_path / "x.parquet").to_pylist()
    assert [r["label_name"] for r in rows] == ["zero"] * 3 + ["one"] * 2 + ["two"]
    assert rows[0]["image"]["bytes"].startswith(b"\x89PNG")


def _write_raw(path: Path, columns: dict, metadata: dict | None = None) -> Path:
    table = pa.table(columns)
    if metadata is not None:
        table = table.replace_schema_metadata(metadata)
    pq.write_table(table, path)
    return path


def _image_struct(png: list) -> pa.StructArray:
    return pa.StructArray.from_arrays([pa.array(png, pa.binary()), pa.array([None] * len(png), pa.string())],
                                      ["bytes", "path"])


def test_class_names_come_from_label_name_without_metadata(tmp_path):
    png = encode_png(tiny_table().images[:3])
    path = _write_raw(tmp_path / "x.parquet", {"image": _image_struct(png), "label": [1, 0, 1],
                                               "label_name": ["cat", "dog", "cat"]})
    t = tables.read_parquet(path)
    assert t.class_names == ("dog", "cat") and t.labels.tolist() == [1, 0, 1]


def test_string_labels_and_given_class_names(tmp_path):
    png = encode_png(tiny_table().images[:3])
    path = _write_raw(tmp_path / "x.parquet", {"image": _image_struct(png), "label": ["b", "a", "b"]})
    assert tables.read_parquet(path).class_names == ("a", "b")
    t = tables.read_parquet(path, class_names=["b", "a", "c"])
    assert t.labels.tolist() == [0, 1, 0] and t.class_names == ("b", "a", "c")


def test_read_parquet_resizes_and_converts_channels(tmp_path):
    tables.write_parquet(tmp_path / "x.parquet", tiny_table(size=8, channels=1))
    t = tables.read_parquet(tmp_path / "x.parquet", image_size=4, channels=3)
    assert t.images.shape == (6, 4, 4, 3)
    with pytest.raises(DataError, match=r"x.parquet row 0: image is 8x8, expected 4x4"):
        tables.read_parquet(tmp_path / "x.parquet", image_size=4, resize=False)


@pytest.mark.parametrize(
    "columns, match",
    [
        ({"label": [0]}, r"missing column\(s\) image \(found label\); expected the Hugging Face image layout image: struct"),
        ({"image": "ok", "label": [0, 5, 1]}, r"row 1: label 5 out of range 0..2"),
        ({"image": "ok", "label": [0, None, 1]}, r"row 1: label is null"),
        ({"image": "null-row-2", "label": [0, 1, 2]}, r"row 2: image is null"),
        ({"image": "corrupt-row-1", "label": [0, 1, 2]}, r"row 1: cannot decode image"),
        ({"image": "ok", "label": [0.5, 1.0, 2.0]}, r"column label has type double"),
    ],
)
def test_read_parquet_refuses_bad_files_naming_file_and_row(tmp_path, columns, match):
    png = encode_png(tiny_table().images[:3])
    image = columns.get("image")
    if image == "null-row-2":
        png[2] = None
    elif image == "corrupt-row-1":
        png[1] = png[1][:20]
    if image is not None:
        columns = {**columns, "image": _image_struct(png)}
    meta = {b"huggingface": json.dumps({"info": {"features": {"label": {"_type": "ClassLabel", "names": list(NAMES)}}}})}
    path = _write_raw(tmp_path / "bad.parquet", columns, meta)
    with pytest.raises(DataError, match=r"bad.parquet.*" + match):
        tables.read_parquet(path)


def test_read_parquet_refuses_other_files_and_other_classes(tmp_path):
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="junk.parquet: not a readable Parquet file"):
        tables.read_parquet(tmp_path / "junk.parquet")
    with pytest.raises(DataError, match="nope.parquet: Parquet file not found"):
        tables.read_parquet(tmp_path / "nope.parquet")
    tables.write_parquet(tmp_path / "x.parquet", tiny_table())
    with pytest.raises(DataError, match=r"class names \['zero', 'one', 'two'\] differ from the expected \['a', 'b', 'c'\]"):
        tables.read_parquet(tmp_path / "x.parquet", class_names=["a", "b", "c"])


@pytest.mark.slow
def test_decode_is_thousands_of_images_per_second(tmp_path):
    rng = np.random.default_rng(0)
    t = ImageTable(rng.integers(0, 256, (3000, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, 3000),
                   tuple("abcdefghij"))
    tables.write_parquet(tmp_path / "x.parquet", t)
    t0 = time.perf_counter()
    back = tables.read_parquet(tmp_path / "x.parquet")
    rate = len(back) / (time.perf_counter() - t0)
    np.testing.assert_array_equal(back.images, t.images)
    assert rate > 2000, f"decoded only {rate:.0f} images/s"
