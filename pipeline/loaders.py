"""Typed readers of a synthetic dataset folder, from a path or from a DVC-tracked version.

One function per return type: `load_arrow`, `load_pandas`, `load_table` (decoded pixels),
`load_torch` and `load_hf`, over `pipeline.reader`. Given `rev` and/or `repo`, each reads
that version of the folder through `dvc.api.DVCFileSystem` (git objects plus the DVC cache or
remote), so another project reads a tagged release without cloning it or running `dvc pull`.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable

from pipeline import reader
from pipeline.errors import DataError
from pipeline.layout import MANIFEST

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from pipeline.data import ImageTable
    from pipeline.torch_dataset import ImageDataset

DEFAULT_REAL = "../prepared/train.parquet"  # where `mix="real+synthetic"` finds the real split, beside the folder


def load_arrow(path: str | Path, mix: str | None = None, real: str | Path | None = None, verify: bool = False,
               rev: str | None = None, repo: str | None = None) -> "pa.Table":
    """Every shard of the folder as one pyarrow Table, Hugging Face metadata kept.

    Args:
        path: the synthetic folder (e.g. `data/synthetic`) or its `manifest.json`; with `rev` or
            `repo`, a path inside that repository (relative to its root).
        mix: None (synthetic rows only) or "real+synthetic" (the real training split first, with a
            `source` column telling the rows apart).
        real: the real Parquet for `mix`; default `<folder>/../prepared/train.parquet` (read from
            the same revision when `rev`/`repo` is given).
        verify: check each shard's sha256 against the manifest.
        rev: a git revision (tag, branch, commit) of `repo` to read; None: its working tree (local
            path) or default branch (URL).
        repo: a git repository path or URL that tracks the folder with DVC; None with a `rev`: the
            repository around the current directory.

    Raises:
        DataError: the folder, file or revision is not there, or the dataset is incomplete or corrupt.
    """
    with _local(path, mix, real, rev, repo) as (folder, real_path):
        return reader.read_shards(folder, mix, real_path, verify)


def load_pandas(path: str | Path, mix: str | None = None, real: str | Path | None = None, verify: bool = False,
                rev: str | None = None, repo: str | None = None) -> "pd.DataFrame":
    """The folder as a DataFrame (`image` as {bytes, path} dicts); arguments as `load_arrow`."""
    return load_arrow(path, mix, real, verify, rev, repo).to_pandas()


def load_table(path: str | Path, mix: str | None = None, real: str | Path | None = None, verify: bool = False,
               rev: str | None = None, repo: str | None = None) -> "ImageTable":
    """The folder as an `ImageTable` of decoded uint8 pixels; arguments as `load_arrow`."""
    with _local(path, mix, real, rev, repo) as (folder, real_path):
        return reader.read_images(folder, mix, real_path, verify)


def load_torch(path: str | Path, mix: str | None = None, real: str | Path | None = None, verify: bool = False,
               rev: str | None = None, repo: str | None = None,
               transform: Callable | None = None) -> "ImageDataset":
    """The folder as a torch map-style dataset of (float (C, H, W) in [0, 1], label) items.

    Arguments as `load_arrow`, plus `transform`, applied to each image tensor. The pixels are
    decoded into memory, so the dataset outlives any temporary copy of a revision.
    """
    with _local(path, mix, real, rev, repo) as (folder, real_path):
        from pipeline.torch_dataset import read_dataset  # torch only for this reader

        return read_dataset(folder, mix, real_path, verify, transform)


def load_hf(path: str | Path, mix: str | None = None, real: str | Path | None = None, verify: bool = False,
            rev: str | None = None, repo: str | None = None):
    """The folder as a Hugging Face `datasets.Dataset` (`image` an Image feature, `label` a
    ClassLabel with the class names); arguments as `load_arrow`. Needs `pip install datasets`.
    """
    try:
        import datasets
    except ImportError:
        raise DataError("load_hf needs the Hugging Face `datasets` package: pip install 'augment[hf]'") from None
    return datasets.Dataset(load_arrow(path, mix, real, verify, rev, repo))


@contextlib.contextmanager
def _local(path: str | Path, mix: str | None, real: str | Path | None, rev: str | None,
           repo: str | None) -> Iterator[tuple[Path, Path | None]]:
    """(folder, real) on this disk: the paths themselves, or a temporary copy of that revision."""
    if rev is None and repo is None:
        yield Path(path), (Path(real) if real is not None else None)
        return
    folder = PurePosixPath(_normalise(PurePosixPath(Path(path).as_posix())))
    if folder.name == MANIFEST:
        folder = folder.parent
    fs = _filesystem(rev, repo)
    where = f"{repo or 'this repository'} at {rev or 'its default revision'}"
    with tempfile.TemporaryDirectory(prefix="augment-load-") as tmp:
        local = Path(tmp) / "synthetic"
        _download(fs, str(folder), local, where, recursive=True)
        local_real = None
        if mix is not None:
            remote_real = PurePosixPath(Path(real).as_posix()) if real is not None else folder / DEFAULT_REAL
            local_real = Path(tmp) / "real.parquet"
            _download(fs, _normalise(remote_real), local_real, where, recursive=False)
        yield local, local_real


def _filesystem(rev: str | None, repo: str | None):
    """A DVCFileSystem over `repo` at `rev`; DataError naming them if either cannot be opened."""
    from dvc.api import DVCFileSystem

    try:
        fs = DVCFileSystem(repo, rev=rev)
        fs.ls("/")  # opens the repository and revision now (the filesystem is lazy)
        return fs
    except Exception as e:  # noqa: BLE001 - dvc/scmrepo raise many kinds (NotDvcRepoError, RevError, CloneError...)
        raise DataError(f"cannot open {repo or 'the current repository'} at revision {rev!r} with DVC: "
                        f"{type(e).__name__}: {str(e).strip()[:200]}") from None


def _normalise(path: PurePosixPath) -> str:
    """`data/synthetic/../prepared/x` -> `data/prepared/x` (DVC's filesystem takes no `..`)."""
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            if not parts:
                raise DataError(f"{path}: leaves the repository")
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts)


def _download(fs, remote: str, local: Path, where: str, recursive: bool) -> None:
    """fs.get(remote -> local), with a DataError naming the path and revision when it is not there."""
    if not fs.exists(remote):
        raise DataError(f"{remote}: not found in {where}")
    if recursive and not fs.isdir(remote):
        raise DataError(f"{remote}: not a folder in {where}; point at the synthetic dataset folder")
    try:
        fs.get(remote, str(local), recursive=recursive)
    except Exception as e:  # noqa: BLE001 - a remote without the data, a network error: one line naming both
        raise DataError(f"{remote}: cannot be read from {where} ({type(e).__name__}: {str(e).strip()[:200]}); "
                        "was it `dvc push`ed?") from None
