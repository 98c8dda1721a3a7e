"""Readers for the supported data sources, each returning `ImageTable`s it has checked.

`read_source(spec, ...)` dispatches on `data.source`: `digits` (scikit-learn's bundled 8x8 digits,
no download), a folder with `train.npz`/`test.npz` [+ `classes.json`], an ImageFolder tree
(`<class>/<image>` or `train/<class>/...` + `test/<class>/...`), or Parquet in the Hugging Face
image layout (a file, or a folder of `*train*.parquet` / `*test*.parquet`).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import images as imgcodec
from pipeline import png
from pipeline.data import ImageTable
from pipeline.errors import DataError
from pipeline.tables import read_parquet

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Source:
    """What a reader found: the training table, the test table if the source has one, a description,
    and what to do about a class without images, in this layout's terms."""

    train: ImageTable
    test: ImageTable | None
    description: str
    empty_hint: str = "add images of it or remove the class"


@dataclass(frozen=True)
class ImageSpec:
    """Requested image size/channels (None keeps the source's) and whether resizing is allowed."""

    size: int | None = None
    channels: int | None = None
    resize: bool = True


def check_class_names(names: list, where: str) -> tuple[str, ...]:
    """Class names must be non-empty, unique strings without control characters."""
    out = []
    for i, name in enumerate(names):
        if not isinstance(name, (str, int)):
            raise DataError(f"{where}: class {i} name {name!r} is not a string")
        name = str(name)
        if not name.strip():
            raise DataError(f"{where}: class {i} has an empty name")
        if any(ord(ch) < 32 for ch in name):
            raise DataError(f"{where}: class {i} name {name!r} contains a control character (e.g. NUL); rename it")
        out.append(name)
    dupes = sorted({n for n in out if out.count(n) > 1})
    if dupes:
        raise DataError(f"{where}: duplicate class name(s) {', '.join(map(repr, dupes))}; names must be unique")
    return tuple(out)


def _conform_array(x: np.ndarray, spec: ImageSpec, where: str) -> np.ndarray:
    """Bring an (N, H, W, C) uint8 array to the requested size and channels."""
    if spec.channels is not None and x.shape[-1] != spec.channels:
        x = np.stack([imgcodec.to_channels(img, spec.channels) for img in x]) if len(x) else x
    if spec.size is not None and x.shape[1:3] != (spec.size, spec.size):
        if not spec.resize:
            raise DataError(
                f"{where}: images are {x.shape[2]}x{x.shape[1]}, expected {spec.size}x{spec.size}; "
                "set data.resize=true to resize"
            )
        x = np.stack([imgcodec.resize(img, spec.size) for img in x])
    return x


# ---- digits -------------------------------------------------------------------------------------

def read_digits(spec: ImageSpec) -> Source:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16 scaled to 0..255); no test set."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
    x = _conform_array(x, spec, "digits")
    names = tuple(str(i) for i in range(10))
    return Source(ImageTable(x, d.target.astype(np.int64), names), None, "scikit-learn digits (8x8)")


# ---- npz folder ---------------------------------------------------------------------------------

def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: cannot read npz ({e.__class__.__name__}: {str(e)[:80]}); the file is corrupt or not an .npz") from None


def _npz_table(path: Path, names: tuple[str, ...] | None, spec: ImageSpec) -> ImageTable:
    arrays = _load_npz(path)
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{path}: missing array {key!r} (found {sorted(arrays)}); expected x (images) and y (labels)")
    x, y = arrays["x"], arrays["y"]
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise DataError(f"{path}: x has shape {x.shape}; expected (N, H, W) or (N, H, W, C) with C in 1, 3, 4")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: {len(x)} images but y has shape {y.shape}; they must match one label per image")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y has dtype {y.dtype}; labels must be integers")
    if np.issubdtype(x.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
        if len(bad):
            raise DataError(f"{path}: x row {bad[0]} has non-finite pixels (NaN/inf); fix or drop it")
        raise DataError(f"{path}: x has dtype {x.dtype}; store pixels as uint8 0..255 (e.g. (x * 255).round().astype('uint8'))")
    if x.dtype != np.uint8:
        if len(x) and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{path}: x has values outside 0..255 ({x.min()}..{x.max()}); store pixels as uint8")
        x = x.astype(np.uint8)
    if names is None:
        names = tuple(str(i) for i in range(int(y.max()) + 1 if len(y) else 0))
    bad = np.flatnonzero((y < 0) | (y >= len(names)))
    if len(bad):
        raise DataError(f"{path}: row {bad[0]}: label {y[bad[0]]} out of range 0..{len(names) - 1} ({len(names)} classes)")
    x = _conform_array(x if x.shape[-1] != 4 else x[..., :3], spec, str(path))
    groups = arrays.get("track")
    if groups is not None and len(groups) != len(x):
        groups = None
    return ImageTable(x, y.astype(np.int64), names, groups)


def read_npz_folder(folder: Path, spec: ImageSpec) -> Source:
    """`train.npz` (+ optional `test.npz`, `classes.json`): x uint8 NHW/NHWC, y int; `track` kept as groups."""
    train_path = folder / "train.npz"
    if not train_path.is_file():
        raise DataError(f"{folder}: no train.npz; an npz source needs train.npz (and optionally test.npz, classes.json)")
    names = None
    classes_path = folder / "classes.json"
    if classes_path.is_file():
        try:
            raw = json.loads(classes_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{classes_path}: not valid JSON ({e}); expected a list of class names") from None
        if not isinstance(raw, list):
            raise DataError(f"{classes_path}: expected a JSON list of class names, got {type(raw).__name__}")
        names = check_class_names(raw, str(classes_path))
    train = _npz_table(train_path, names, spec)
    test_path = folder / "test.npz"
    test = _npz_table(test_path, train.class_names, spec) if test_path.is_file() else None
    hint = (f"add images with its label to {train_path} or remove the class from {classes_path}" if names is not None
            else f"{train_path}'s labels skip it: add images with that label or renumber y without gaps")
    return Source(train, test, f"npz folder {folder}", hint)


# ---- ImageFolder ----------------------------------------------------------------------------------

def _image_folder_table(root: Path, spec: ImageSpec, names: tuple[str, ...] | None = None) -> ImageTable:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found = tuple(p.name for p in class_dirs)
    if names is None:
        names = check_class_names(list(found), str(root))
    elif set(found) - set(names):
        extra = sorted(set(found) - set(names))
        raise DataError(f"{root}: class folder(s) {extra} are not among the training classes {list(names)}")
    pixels, labels, paths = [], [], []
    for d in class_dirs:
        files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        for f in files:
            img = png.decode(f.read_bytes(), str(f))
            pixels.append(imgcodec.conform(img, str(f), spec.size, spec.channels, spec.resize))
            labels.append(names.index(d.name))
            paths.append(f)
    if not pixels:
        raise DataError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))} in <class>/ folders)")
    odd = next((i for i, img in enumerate(pixels) if img.shape != pixels[0].shape), None)
    if odd is not None:  # name the file, not just its position
        (h, w, c), (h0, w0, c0) = pixels[odd].shape, pixels[0].shape
        raise DataError(f"{paths[odd]}: image {odd} is {w}x{h} with {c} channel(s), {paths[0].name} is {w0}x{h0} "
                        f"with {c0}; set data.image_size and data.channels to bring them all to one shape")
    x = imgcodec.stack(pixels, str(root))
    return ImageTable(x, np.asarray(labels, dtype=np.int64), names)


def read_image_folder(root: Path, spec: ImageSpec) -> Source:
    """`<class>/<image>` or `train/<class>/<image>` + `test/<class>/<image>`."""
    subdirs = {p.name for p in root.iterdir() if p.is_dir()}
    split = {"train", "test"} <= subdirs
    classes = root / "train" if split else root
    hint = (f"its folder in {classes} holds no image file ({', '.join(sorted(IMAGE_SUFFIXES))}); "
            "add images to it or remove the folder")
    if split:
        train = _image_folder_table(root / "train", spec)
        test = _image_folder_table(root / "test", spec, train.class_names)
        return Source(train, test, f"ImageFolder {root}", hint)
    return Source(_image_folder_table(root, spec), None, f"ImageFolder {root}", hint)


# ---- Parquet (Hugging Face image layout) ----------------------------------------------------------

def read_parquet_source(path: Path, spec: ImageSpec) -> Source:
    """A Parquet file (train only) or a folder with `*train*.parquet` and optional `*test*.parquet`."""
    def read_many(files: list[Path], names=None) -> ImageTable:
        tables = [read_parquet(f, spec.size, spec.channels, spec.resize, class_names=names) for f in files]
        names = names or tables[0].class_names
        for f, t in zip(files, tables):
            if t.class_names != names:
                raise DataError(f"{f}: class names {list(t.class_names)} differ from {files[0]}'s {list(names)}")
        return ImageTable.concat(tables) if len(tables) > 1 else tables[0]

    hint = (f"add rows with that label to {path}, or drop the class from the label column's classes "
            "(its ClassLabel names, or renumber integer labels without gaps)")
    if path.is_file():
        return Source(read_many([path]), None, f"Parquet {path}", hint)
    files = sorted(path.rglob("*.parquet"))
    if not files:
        raise DataError(f"{path}: no .parquet files found")
    train_files = [f for f in files if "train" in f.name] or [f for f in files if "test" not in f.name]
    test_files = [f for f in files if "test" in f.name]
    if not train_files:
        raise DataError(f"{path}: only test Parquet files found; add a *train*.parquet")
    train = read_many(train_files)
    test = read_many(test_files, train.class_names) if test_files else None
    return Source(train, test, f"Parquet folder {path}", hint)


def read_source(source: str, spec: ImageSpec) -> Source:
    """Dispatch on `data.source`: "digits", an npz folder, an ImageFolder tree, or Parquet."""
    if source == "digits":
        return read_digits(spec)
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"data.source: {source!r} not found; use 'digits', a folder with train.npz, an ImageFolder "
            "tree, or a Parquet file/folder"
        )
    if path.is_file():
        if path.suffix == ".parquet":
            return read_parquet_source(path, spec)
        raise DataError(f"data.source: {source!r} is a file but not .parquet; point at its folder instead")
    if (path / "train.npz").exists():
        return read_npz_folder(path, spec)
    if any(path.rglob("*.parquet")):
        return read_parquet_source(path, spec)
    if any(p.is_dir() for p in path.iterdir()):
        return read_image_folder(path, spec)
    raise DataError(f"data.source: {source!r} is empty or has no recognised layout (train.npz, <class>/ folders, or .parquet)")
