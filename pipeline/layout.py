"""The release folder's layout: the name and place of every file a synthetic dataset has.

The writer (`pipeline.release`), the dataset card (`pipeline.card`) and the reader
(`pipeline.reader`) all take their file names from here, as do the ImageFolder class folders
(`export_class_dirs`: safe, unique, numbered so that ImageFolder's index is the label).
"""

from __future__ import annotations

import re
import unicodedata

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
# Windows refuses these as file names whatever the extension; exported class folders avoid them.
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
MAX_NAME_BYTES = 200


def shard_name(index: int, count: int) -> str:
    """`train-00003-of-00010.parquet`: the Hugging Face shard naming."""
    return f"train-{index:05d}-of-{count:05d}.parquet"


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
