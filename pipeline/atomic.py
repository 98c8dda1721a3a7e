"""Atomic file writes: every file is written under a temporary name in its folder and renamed.

A crash or `kill -9` therefore leaves either the old file or the new one, never half a file that
looks whole. Temporary names start with `.tmp-` so readers and globs can ignore them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from pipeline.errors import StorageError

TMP_PREFIX = ".tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; outputs get the mode an ordinary open() would give (0666 - umask)
_FILE_MODE = 0o666 & ~_umask()
# errno values of a write that failed because the disk, the user's quota or the file size limit is full
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def is_disk_full(error: BaseException, folder: str | os.PathLike) -> bool:
    """True when `error`, raised while writing into `folder`, means the disk (or quota) is full.

    torch.save reports a full disk as a RuntimeError without an errno ("unexpected pos ..."), so
    a RuntimeError counts when less than 1 MiB is left in `folder` (checked before cleaning up).
    """
    if isinstance(error, StorageError):
        return True
    if isinstance(error, OSError) and error.errno in DISK_FULL:
        return True
    if isinstance(error, RuntimeError):
        try:
            return shutil.disk_usage(folder).free < (1 << 20)
        except OSError:
            return False
    return False


def _full(target: str, names: str) -> StorageError:
    return StorageError(f"{target}: no space left on the device while writing {names}; free some space and "
                        "rerun (the earlier outputs are unchanged)")


def _temp_beside(path: Path) -> Path:
    """A new empty `.tmp-<name>.<random>` file in path's folder, with the ordinary file mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    return Path(tmp)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it onto `path`.

    On any exception the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    tmp_path = _temp_beside(path)
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, path)
    except BaseException as e:
        full = is_disk_full(e, path.parent)
        tmp_path.unlink(missing_ok=True)
        if full:
            raise _full(str(path), "it") from e
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_paths(paths: list[str | os.PathLike]) -> Iterator[list[Path]]:
    """Temporary paths beside each of `paths`; when the block succeeds all are renamed into place.

    For a stage whose outputs belong together: a failure while writing (disk full, a crash) changes
    none of `paths`. The last path marks the set complete: it is removed before the renames and
    renamed last, so a run killed during the renames leaves it absent, never stale.
    """
    paths = [Path(p) for p in paths]
    tmps: list[Path] = []
    try:
        for p in paths:
            tmps.append(_temp_beside(p))
        yield tmps
        for tmp in tmps:
            _fsync_file(tmp)
    except BaseException as e:
        full = is_disk_full(e, paths[0].parent)
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        if full:
            raise _full(str(paths[0].parent), ", ".join(p.name for p in paths)) from e
        raise
    paths[-1].unlink(missing_ok=True)
    for tmp, p in zip(tmps, paths):
        os.replace(tmp, p)
    for folder in dict.fromkeys(p.parent for p in paths):
        _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write `data` to `path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write `text` (UTF-8) to `path`."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write `obj` as indented, key-sorted JSON with a trailing newline."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def clean_temporaries(folder: str | os.PathLike) -> int:
    """Remove `.tmp-*` leftovers of a killed run in `folder` (not recursive); return how many."""
    n = 0
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(TMP_PREFIX + "*"):
            if p.is_file():
                p.unlink(missing_ok=True)
                n += 1
    return n
