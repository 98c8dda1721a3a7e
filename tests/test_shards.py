"""The release folder (`release`: shards, ImageFolder, sample grid, manifest, card; `layout`: its
file and class-folder names), its readers (`reader`, `loaders`), and what a `kill -9` while
writing leaves behind. Parquet itself: test_tables.py; the PNG codec: test_png.py."""

from __future__ import annotations

import importlib
import io as pyio
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline import atomic, layout, loaders, reader, release, tables
from pipeline.card import md_cell
from pipeline.data import ImageTable
from pipeline.errors import DataError
from pipeline.grid import image_grid

REPO = Path(__file__).resolve().parents[1]
NAMES = ("zero", "one", "two")


def tiny_table(n_per_class=(3, 2, 1), size=4, channels=1, seed=0, names=NAMES) -> ImageTable:
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)]).astype(np.int64)
    images = rng.integers(0, 256, (len(labels), size, size, channels), dtype=np.uint8)
    return ImageTable(images, labels, names)


def synthetic_columns(n: int) -> dict:
    return release.synthetic_columns("ab" * 32, np.arange(n) * 7, np.full(n, np.nan))


# ---- safe class folder names --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, safe",
    [("a/b", "a_b"), ("a\\b", "a_b"), ("..", "__"), (".", "_"), (".hidden", "_hidden"), ("x\x00y", "x_y"),
     (" sp ace ", "sp ace"), ("é猫", "é猫"), ("CON", "_CON"), ("nul.txt", "_nul.txt"), ("", "_"),
     ("ok.", "ok"), ("a:b*c?", "a_b_c_")],
)
def test_safe_dir_name(name, safe):
    assert layout.safe_dir_name(name) == safe


def test_safe_class_dirs_are_unique_even_ignoring_case():
    dirs = layout.safe_class_dirs(["a/b", "a_b", "A", "a", "a-2", "x" * 300])
    assert list(dirs.values())[:5] == ["a_b", "a_b-2", "A", "a-2", "a-2-2"]
    assert len(dirs["x" * 300].encode()) <= layout.MAX_NAME_BYTES


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=40), min_size=1, max_size=6, unique=True))
def test_any_class_names_give_distinct_folders_inside_the_root(tmp_path_factory, names):
    root = Path("/srv/images")
    dirs = layout.safe_class_dirs(names)
    assert len({d.casefold() for d in dirs.values()}) == len(names)
    for d in dirs.values():
        assert d and d not in (".", "..") and not d.startswith(".")
        assert "/" not in d and "\\" not in d and "\x00" not in d
        assert os.path.normpath(root / d / "0.png").startswith(str(root) + os.sep)
        assert len(d.encode("utf-8")) <= layout.MAX_NAME_BYTES + 8


# ---- the synthetic folder -------------------------------------------------------------------------------

def write_folder(folder, t: ImageTable, shard_size=4, export=False, extra=None):
    return release.write_shards(folder, t, synthetic_columns(len(t)), shard_size,
                                extra if extra is not None else {"plan": {"zero": 3}, "generator": "ab" * 32},
                                export_images=export)


def test_write_shards_rows_sha256_pngs_and_manifest(tmp_path):
    t = tiny_table((5, 0, 4), size=6, channels=3)
    m = write_folder(tmp_path / "syn", t)
    folder = tmp_path / "syn"
    assert [f["path"] for f in m["files"]] == [f"data/train-0000{k}-of-00003.parquet" for k in range(3)]
    assert [f["rows"] for f in m["files"]] == [4, 4, 1]
    for f in m["files"]:
        assert atomic.sha256_file(folder / f["path"]) == f["sha256"]
    assert json.loads((folder / "manifest.json").read_text()) == m
    assert m["counts"] == {"zero": 5, "one": 0, "two": 4} and m["rows"] == 9
    assert m["plan"] == {"zero": 3} and m["package"]["version"]
    table = pa.concat_tables([pq.read_table(folder / f["path"]) for f in m["files"]])
    assert table.schema.names == ["image", "label", "label_name", "source", "generator", "seed", "score"]
    rows = table.to_pylist()
    assert [r["label"] for r in rows] == t.labels.tolist()
    assert {r["source"] for r in rows} == {"synthetic"} and [r["seed"] for r in rows] == list(range(0, 63, 7))
    assert all(r["score"] is None for r in rows)  # NaN (not scored) is stored as null
    for r, img in zip(rows, t.images):
        with Image.open(pyio.BytesIO(r["image"]["bytes"])) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (6, 6)
            np.testing.assert_array_equal(np.asarray(im), img)
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "class_label" in card and "| 2 | two | 4 |" in card
    named = re.findall(r"`pipeline\.(\w+)\.(\w+)\(", card)  # the readers the card tells users to call exist
    assert named and all(hasattr(importlib.import_module(f"pipeline.{m}"), f) for m, f in named), named
    assert json.loads((folder / "classes.json").read_text()) == list(NAMES)
    assert (folder / "sample_grid.png").is_file()


def test_sample_grid_is_one_row_per_class_with_images_white_where_a_class_has_fewer():
    images = np.arange(1, 5, dtype=np.uint8).reshape(4, 1, 1, 1) * 10  # 1x1 images 10, 20, 30, 40
    labels = np.array([2, 0, 2, 2])  # class 1 has no image: no row
    g = release.sample_grid(images, labels, num_classes=3, per_class=2)
    # cells of 1 px, 2 px between them, 1 px around: 2 rows x 2 columns -> (2*3, 2*3)
    expected = np.full((6, 6, 1), 255, np.uint8)
    expected[1, 1], expected[4, 1], expected[4, 4] = 20, 10, 30  # class 0: image 1; class 2: images 0, 2
    np.testing.assert_array_equal(g, expected)


def test_image_grid_upscales_cells_and_pads_them():
    images = np.array([[[[7, 8, 9]]], [[[1, 2, 3]]]], np.uint8)  # two 1x1 RGB images
    g = image_grid(images, rows=1, min_cell=2, pad=1)
    assert g.shape == (4, 7, 3) and g.dtype == np.uint8
    np.testing.assert_array_equal(g[1:3, 1:3], np.full((2, 2, 3), [7, 8, 9]))
    np.testing.assert_array_equal(g[1:3, 4:6], np.full((2, 2, 3), [1, 2, 3]))
    assert (g[0] == 255).all() and (g[:, 3] == 255).all() and (g[:, 6] == 255).all()
    lone = image_grid(images[:1, ..., :1], rows=1, pad=2, margin=1)  # make_grid would drop a lone image's padding
    np.testing.assert_array_equal(lone[..., 0], [[255, 255, 255], [255, 7, 255], [255, 255, 255]])
    with pytest.raises(ValueError, match="margin 3 and pad 2"):
        image_grid(images, rows=1, margin=3)


def test_md_cell_escapes_pipes_and_flattens_control_characters():
    assert md_cell("a|b\nc\td\re") == "a\\|b c d e"
    assert md_cell(3.5) == "3.5"


def test_grayscale_pngs_decode_as_mode_l(tmp_path):
    write_folder(tmp_path / "syn", tiny_table(size=5, channels=1))
    row = pq.read_table(tmp_path / "syn" / "data" / "train-00000-of-00002.parquet").to_pylist()[0]
    with Image.open(pyio.BytesIO(row["image"]["bytes"])) as im:
        assert im.mode == "L" and im.size == (5, 5)


def test_rewrite_removes_stale_shards_and_images(tmp_path):
    folder = tmp_path / "syn"
    write_folder(folder, tiny_table((6, 6, 6)), shard_size=2, export=True)
    assert len(list(folder.glob("data/train-*.parquet"))) == 9 and (folder / "images").is_dir()
    (folder / "notes.txt").write_text("mine")  # a user's file is left alone
    (folder / "train-00000-of-00009.parquet").write_bytes(b"")  # a shard of the layout before 0.4.0
    m = write_folder(folder, tiny_table((1, 1, 1)), shard_size=2)
    assert sorted(f"data/{p.name}" for p in folder.glob("data/train-*.parquet")) == [f["path"] for f in m["files"]]
    assert not list(folder.glob("train-*.parquet"))
    assert not (folder / "images").exists() and (folder / "notes.txt").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]


def test_empty_plan_gives_one_empty_shard(tmp_path):
    t = ImageTable(np.zeros((0, 4, 4, 1), np.uint8), np.zeros(0, np.int64), NAMES)
    m = write_folder(tmp_path / "syn", t)
    assert [f["rows"] for f in m["files"]] == [0] and len(loaders.load_arrow(tmp_path / "syn")) == 0
    schema = pq.read_schema(tmp_path / "syn" / m["files"][0]["path"])
    assert schema.field("source").type == pa.string() and schema.field("seed").type == pa.int64()


def test_manifest_extra_cannot_overwrite_the_file_list(tmp_path):
    with pytest.raises(ValueError, match=r"manifest_extra keys \['files'\] clash"):
        write_folder(tmp_path / "syn", tiny_table(), extra={"files": []})


DANGEROUS = ("a/b", "..", "two words", "é猫", "../../etc", "A", "a")


@pytest.mark.slow
def test_image_folder_export_is_safe_and_torchvision_reads_it(tmp_path):
    from torchvision.datasets import ImageFolder

    t = tiny_table((2, 3, 1, 2, 1, 1, 2), size=4, channels=3, names=DANGEROUS)
    m = write_folder(tmp_path / "syn", t, export=True)
    root = tmp_path / "syn" / "images"
    dirs = m["images"]["class_dirs"]
    assert dirs == {"a/b": "0-a_b", "..": "1-__", "two words": "2-two words", "é猫": "3-é猫",
                    "../../etc": "4-___.._etc", "A": "5-A", "a": "6-a"}
    files = [p for p in (tmp_path).rglob("*.png") if "images" in p.parts]
    assert len(files) == len(t) and all(p.resolve().is_relative_to(root.resolve()) for p in files)
    ds = ImageFolder(str(root))
    to_name = {d: n for n, d in dirs.items()}
    got = sorted((os.path.basename(path), to_name[ds.classes[y]]) for path, y in ds.samples)
    assert ds.class_to_idx == {d: i for i, d in enumerate(dirs.values())}
    rows = pq.read_table(tmp_path / "syn" / "data" / "train-00000-of-00003.parquet").to_pylist()
    assert rows[0]["image"]["path"] == "images/0-a_b/000000.png"
    want = sorted((f"{r:06d}.png", t.class_names[y]) for r, y in enumerate(t.labels))
    assert got == want
    img, _ = ds[0]
    assert img.size == (4, 4)


def test_image_folder_indices_are_the_shard_labels_when_the_plan_leaves_classes_out(tmp_path):
    """Classes 'a' and 'zz' get no image: their folders are still there (kept by a marker file
    through copies that carry files only, as DVC and git do), so ImageFolder's index of every
    image is its shard label, and classes.json and the card give the mapping."""
    from torchvision.datasets import ImageFolder

    names = ("a", "b", "c", "zz", "d")  # sorted names would number them otherwise
    t = tiny_table((0, 2, 3, 0, 1), size=4, channels=1, names=names)
    write_folder(tmp_path / "syn", t, export=True)
    copy = tmp_path / "copy"
    for f in (tmp_path / "syn").rglob("*"):
        if f.is_file():
            (copy / f.relative_to(tmp_path / "syn")).parent.mkdir(parents=True, exist_ok=True)
            (copy / f.relative_to(tmp_path / "syn")).write_bytes(f.read_bytes())
    for root in (tmp_path / "syn", copy):
        ds = ImageFolder(str(root / "images"), allow_empty=True)
        assert len(ds.classes) == len(names)
        by_path = {r["image"]["path"]: r["label"] for r in loaders.load_pandas(root).to_dict("records")}
        got = {Path(p).relative_to(root).as_posix(): y for p, y in ds.samples}
        assert got == by_path and sorted(set(got.values())) == [1, 2, 4]
        assert json.loads((root / "classes.json").read_text()) == list(names)
        assert [ds.classes[i].split("-", 1)[1] for i in range(5)] == list(names)
    card = (tmp_path / "syn" / "README.md").read_text()
    assert "| 3 | zz | 0 | `images/3-zz/` |" in card and "allow_empty=True" in card


@pytest.mark.slow
def test_hugging_face_datasets_reads_the_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    t = tiny_table((3, 2, 4), size=5, channels=1, names=("cat", "dog", "é猫"))
    write_folder(tmp_path / "syn", t, shard_size=4)
    files = sorted(str(p) for p in (tmp_path / "syn").glob("data/train-*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.features["label"].names == ["cat", "dog", "é猫"]
    assert ds["label"] == t.labels.tolist() and ds["label_name"] == [t.class_names[y] for y in t.labels]
    first = ds[0]["image"]
    assert first.mode == "L" and np.array_equal(np.asarray(first), t.images[0, ..., 0])
    # the folder itself, through the dataset card's `configs`
    ds2 = datasets.load_dataset(str(tmp_path / "syn"), split="train", cache_dir=str(tmp_path / "cache2"))
    assert len(ds2) == len(t) and ds2.features["label"].names == ["cat", "dog", "é猫"]


# ---- readers -----------------------------------------------------------------------------------------

def test_load_as_torch_pandas_arrow_and_table(tmp_path):
    t = tiny_table(size=4, channels=1)
    write_folder(tmp_path / "syn", t)
    ds = loaders.load_torch(tmp_path / "syn", verify=True)
    x, y = ds[3]
    assert tuple(x.shape) == (1, 4, 4) and y == 1 and ds.classes == list(NAMES) and len(ds) == 6
    assert float(x.max()) <= 1.0 and np.allclose(x.numpy()[0] * 255, t.images[3, ..., 0])
    df = loaders.load_pandas(tmp_path / "syn" / "manifest.json")
    assert df["label"].tolist() == t.labels.tolist() and df["score"].isna().all()
    assert loaders.load_arrow(tmp_path / "syn").num_rows == 6
    back = loaders.load_table(tmp_path / "syn")
    np.testing.assert_array_equal(back.images, t.images)


def test_load_mixes_real_and_synthetic(tmp_path):
    real = tiny_table((4, 1, 1), seed=1)
    tables.write_parquet(tmp_path / "data" / "prepared" / "train.parquet", real)
    syn = tiny_table((0, 3, 3), seed=2)
    write_folder(tmp_path / "data" / "synthetic", syn)
    mixed = loaders.load_table(tmp_path / "data" / "synthetic", mix="real+synthetic")
    np.testing.assert_array_equal(mixed.labels, np.concatenate([real.labels, syn.labels]))
    np.testing.assert_array_equal(mixed.images, np.concatenate([real.images, syn.images]))
    ds = loaders.load_torch(tmp_path / "data" / "synthetic", mix="real+synthetic")
    assert ds.source == ["real"] * 6 + ["synthetic"] * 6
    df = loaders.load_pandas(tmp_path / "data" / "synthetic", mix="real+synthetic")
    assert df["seed"].isna().sum() == 6
    other = tiny_table(names=("x", "y", "z"))
    tables.write_parquet(tmp_path / "other.parquet", other)
    with pytest.raises(DataError, match=r"other.parquet: class names \['x', 'y', 'z'\] differ"):
        loaders.load_torch(tmp_path / "data" / "synthetic", mix="real+synthetic", real=tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="mix='synthetic'"):
        loaders.load_torch(tmp_path / "data" / "synthetic", mix="synthetic")


def test_verify_names_a_changed_file(tmp_path):
    folder = tmp_path / "syn"
    m = write_folder(folder, tiny_table())
    victim = folder / m["files"][1]["path"]
    other = folder / m["files"][0]["path"]
    victim.write_bytes(other.read_bytes())  # still valid Parquet, wrong content
    loaders.load_arrow(folder)  # without verify, not noticed
    with pytest.raises(DataError, match=r"train-00001-of-00002.parquet: sha256 does not match"):
        loaders.load_arrow(folder, verify=True)
    victim.unlink()
    with pytest.raises(DataError, match=r"train-00001-of-00002.parquet: listed in .*manifest.json but missing"):
        loaders.load_arrow(folder)


def test_manifest_problems_are_data_errors(tmp_path):
    folder = tmp_path / "syn"
    folder.mkdir()
    with pytest.raises(DataError, match="manifest.json: not found; .* is not a finished synthetic dataset"):
        loaders.load_torch(folder)
    (folder / "manifest.json").write_text('{"files": [{"path": "../x.parquet", "sha256": "0", "rows": 1}]}')
    with pytest.raises(DataError, match=r"files\[0\].path '../x.parquet' is not a path inside"):
        reader.read_manifest(folder)
    (folder / "manifest.json").write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        reader.read_manifest(folder)


# ---- kill -9 while writing ----------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from pipeline import release
    from pipeline.data import ImageTable
    folder, n, value = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    images = np.full((n, 4, 4, 1), value, np.uint8)
    labels = np.arange(n) % 3
    print("start", flush=True)
    release.write_shards(folder, ImageTable(images, labels, ["a", "b", "c"]), {"source": "synthetic"}, 1,
                         {"run": value}, export_images=True)
    print("done", flush=True)
""")


def _run_writer(folder: Path, n: int, value: int, kill_after: float | None):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(n), str(value)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill_after is None:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        return True
    assert proc.stdout.readline().strip() == "start"
    # wait until staging is under way, then kill -9 in the middle of it
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(release.STAGE_PREFIX) for p in folder.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return proc.returncode != -signal.SIGKILL  # True: it finished before the kill


def _assert_consistent(folder: Path) -> dict | None:
    """Every visible shard is listed in the manifest and matches it; no manifest means no visible shard."""
    visible = {p.relative_to(folder).as_posix() for p in [*folder.iterdir(), *folder.glob("data/*")]
               if not p.name.startswith(".")}
    if "manifest.json" not in visible:
        assert not [v for v in visible if v.endswith(".parquet")], visible
        return None
    m = reader.read_manifest(folder)
    listed = {f["path"] for f in m["files"]}
    assert {v for v in visible if v.endswith(".parquet")} == listed
    loaders.load_arrow(folder, verify=True)
    return m


@pytest.mark.slow
def test_kill_9_while_writing_leaves_the_old_dataset_and_a_rerun_completes(tmp_path):
    folder = tmp_path / "syn"
    _run_writer(folder, 30, 10, None)
    old = _assert_consistent(folder)
    assert old["run"] == 10 and len(old["files"]) == 30
    finished = _run_writer(folder, 3000, 20, kill_after=0.3)
    assert not finished, "the writer finished before the kill; make it slower"
    assert any(p.name.startswith(".tmp-") for p in folder.iterdir())  # it was killed mid-write
    after = _assert_consistent(folder)
    assert after == old  # the previous dataset is still whole
    _run_writer(folder, 40, 30, None)
    new = _assert_consistent(folder)
    assert new["run"] == 30 and new["rows"] == 40 and len(new["files"]) == 40
    assert not any(p.name.startswith(".tmp-") for p in folder.iterdir())
    assert len(list((folder / "images").rglob("*.png"))) == 40
    assert loaders.load_table(folder).images.max() == 30


def test_parquet_pngs_are_stored_and_exported_files_deflated_with_the_same_pixels(tmp_path):
    """Inside Parquet the PNGs are stored (the file's zstd compresses across rows); the loose
    ImageFolder files have nothing around them, so they are deflated. Same pixels either way."""
    import zlib

    t = tiny_table((6, 0, 2), size=16)
    t = ImageTable(np.repeat(t.images[:, :1], 16, axis=1), t.labels, t.class_names)  # compressible rows
    folder = tmp_path / "syn"
    write_folder(folder, t, export=True)
    table = pq.read_table(folder / "data" / "train-00000-of-00002.parquet")
    for k, row in enumerate(table.column("image").to_pylist()):
        loose = (folder / row["path"]).read_bytes()
        assert len(loose) < len(row["bytes"])
        idat = row["bytes"][row["bytes"].index(b"IDAT") + 4 :]
        assert idat[2] & 0b110 == 0  # first deflate block header: BTYPE 00, stored
        assert len(zlib.decompress(idat[: -12 - 4])) == 16 * (1 + 16)  # the scanlines, uncompressed
        for data in (loose, row["bytes"]):
            with Image.open(pyio.BytesIO(data)) as im:
                np.testing.assert_array_equal(np.asarray(im), t.images[k, :, :, 0])


def test_a_crash_in_the_switch_leaves_an_incomplete_folder_that_readers_refuse(tmp_path, monkeypatch):
    folder = tmp_path / "syn"
    write_folder(folder, tiny_table((4, 4, 4)), shard_size=2)
    real_replace, calls = os.replace, []

    def crash_on_third(src, dst):
        if Path(src).name.startswith(release.STAGE_PREFIX) and not Path(dst).name.startswith(".tmp-"):
            calls.append(dst)  # a rename of the switch (staged file -> final name)
            if len(calls) == 3:
                raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(release.os, "replace", crash_on_third)
    with pytest.raises(OSError, match="simulated crash"):
        write_folder(folder, tiny_table((1, 2, 3), seed=1), shard_size=2)
    monkeypatch.undo()
    assert not (folder / "manifest.json").exists()  # the manifest goes last, so none: not "complete"
    with pytest.raises(DataError, match="not a finished synthetic dataset"):
        loaders.load_torch(folder)
    m = write_folder(folder, tiny_table((1, 2, 3), seed=1), shard_size=2)
    assert _assert_consistent(folder) == m and m["rows"] == 6
