"""The release writer: a synthetic dataset folder written whole or not at all.

`write_shards` writes `data/` Parquet shards, `classes.json`, an optional ImageFolder export,
the sample grid, the dataset card and, last, `manifest.json`: every file staged under a `.tmp-`
name, then switched into place, so an interrupted run leaves the previous release intact.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline import __version__, atomic, png
from pipeline.card import dataset_card
from pipeline.data import ImageTable
from pipeline.errors import StorageError
from pipeline.grid import image_grid
from pipeline.layout import (
    CARD,
    CLASSES,
    EMPTY_MARKER,
    GRID,
    IMAGES_DIR,
    MANIFEST,
    SHARD_RE,
    SHARDS_DIR,
    export_class_dirs,
    shard_name,
)
from pipeline.tables import hf_features, table_to_arrow, write_arrow

# New files are first written under these names (ignored by globs, removed by a rerun), then
# renamed into place in one short switch.
STAGE_PREFIX = atomic.TMP_PREFIX + "stage-"


def shard_bounds(rows: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, stop) row ranges of at most `shard_size` rows; one empty shard when `rows` is 0."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [(a, min(a + shard_size, rows)) for a in range(0, rows, shard_size)] or [(0, 0)]


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


def _stage(folder: Path, name: str) -> Path:
    return folder / f"{STAGE_PREFIX}{name}"


def _clean_stage(folder: Path) -> None:
    """Remove what a killed run left: temporary files and staged folders (only `.tmp-*` entries)."""
    atomic.clean_temporaries(folder)
    for p in folder.glob(atomic.TMP_PREFIX + "*"):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)


def _export_images(stage_dir: Path, images: np.ndarray, rel_paths: list[str], dirs: dict[str, str]) -> None:
    """Write `images/<label>-<class>/<id>.png` under `stage_dir` (renamed into place as a whole
    later), deflated at png.PNG_LEVEL_LOOSE: unlike the Parquet copies, nothing compresses them further.

    Every class gets its folder, those without images an EMPTY_MARKER file, so ImageFolder's
    class indices are the labels whichever classes the plan filled.
    """
    stage_dir.mkdir(parents=True, exist_ok=True)
    used = {p.rsplit("/", 1)[0] for p in rel_paths}
    for d in dirs.values():
        (stage_dir / d).mkdir(parents=True, exist_ok=True)
        if d not in used:
            (stage_dir / d / EMPTY_MARKER).write_bytes(b"")
    for data, rel in zip(png.encode_png_batch(images, png.PNG_LEVEL_LOOSE), rel_paths):
        # plain writes are enough: the folder is staged and renamed as a whole, atomically
        (stage_dir / rel).write_bytes(data)


def _shard_tables(
    table: ImageTable, columns: dict, export_images: bool, shard_size: int,
) -> tuple[int, Iterator[pa.Table], list[str], dict[str, str]]:
    """How many shards, their Arrow tables, made one at a time as they are consumed (so no Arrow
    array outgrows its 2 GiB offsets however large the dataset), the ImageFolder paths and class folders."""
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
    table: ImageTable,
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
        table: the rows (uint8 (N, H, W, C) images, labels) and all classes (the ClassLabel
            names), also those without rows.
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
        staged, manifest = _stage_dataset(folder, table, columns, shard_size, manifest_extra, export_images)
    except BaseException as e:
        full = atomic.is_disk_full(e, folder)
        _clean_stage(folder)  # e.g. a full disk: leave no part of the new dataset behind, only the old one
        if full:
            raise StorageError(f"{folder}: no space left on the device while writing the new dataset; free some "
                               "space and rerun (the previous dataset is unchanged)") from e
        raise
    _switch(folder, staged, manifest)
    return manifest


def _stage_dataset(
    folder: Path, table: ImageTable, columns: dict, shard_size: int, manifest_extra: dict, export_images: bool,
) -> tuple[list[tuple[Path, str]], dict]:
    """Write every file of the new dataset under its staged name; return (staged, name) pairs and the manifest."""
    count, tables, rel, dirs = _shard_tables(table, columns, export_images, shard_size)
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
        _export_images(_stage(folder, IMAGES_DIR), table.images, rel, dirs)
        staged.append((_stage(folder, IMAGES_DIR), IMAGES_DIR))
    names = table.class_names
    atomic.write_text(_stage(folder, CLASSES), json.dumps(list(names), indent=2, ensure_ascii=False) + "\n")
    staged.append((_stage(folder, CLASSES), CLASSES))
    manifest = _manifest(arrow.schema, num_bytes, files, names, table.counts(), dirs if export_images else None,
                         manifest_extra)
    if len(table):
        grid = sample_grid(table.images, table.labels, len(names))
        atomic.write_bytes(_stage(folder, GRID), png.encode_png(grid[None], compress_level=png.PNG_LEVEL_LOOSE)[0])
        staged.append((_stage(folder, GRID), GRID))
    atomic.write_text(_stage(folder, CARD), dataset_card(manifest))
    staged.append((_stage(folder, CARD), CARD))
    return staged, manifest


def sample_grid(images: np.ndarray, labels: np.ndarray, num_classes: int, per_class: int = 8) -> np.ndarray:
    """uint8 (H', W', C) grid: one row per class that has images, its first `per_class` images
    (white cells where a class has fewer), 2 px between cells and 1 px around them."""
    rows = [np.flatnonzero(labels == c)[:per_class] for c in range(num_classes) if (labels == c).any()]
    cells = np.full((len(rows), per_class, *images.shape[1:]), 255, dtype=np.uint8)
    for r, index in enumerate(rows):
        cells[r, : len(index)] = images[index]
    return image_grid(cells.reshape(-1, *images.shape[1:]), rows=len(rows), pad=2, margin=1)


_RESERVED_KEYS = (
    "format", "files", "rows", "num_bytes", "class_names", "counts", "features", "columns", "images", "package",
)


def _manifest(
    schema: pa.Schema, num_bytes: int, files: list, names: tuple, counts: np.ndarray, dirs: dict | None, extra: dict,
) -> dict:
    clash = sorted(set(extra) & set(_RESERVED_KEYS))
    if clash:
        raise ValueError(f"manifest_extra keys {clash} clash with the manifest's own keys {list(_RESERVED_KEYS)}")
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
    atomic.write_json(folder / MANIFEST, manifest)
