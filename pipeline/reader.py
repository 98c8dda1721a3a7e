"""The reading side of a release folder: its manifest checked, its shards as one table.

`read_manifest` checks the file list; `read_shards` returns every shard as one Arrow table
(optionally after the real training split), `read_images` the decoded `ImageTable`
(`pipeline.torch_dataset` wraps it for torch). `pipeline.loaders` puts these behind the public
`load_*` functions, which also read a DVC-tracked revision. Nothing here imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from pipeline import atomic
from pipeline.data import ImageTable
from pipeline.errors import DataError
from pipeline.layout import MANIFEST
from pipeline.tables import check_columns, decode_table, hf_class_names, read_arrow

MIXES = (None, "real+synthetic")


def folder_of(path: str | Path) -> Path:
    """The release folder of `path`: the folder itself, or the one holding a given manifest.json."""
    path = Path(path)
    return path.parent if path.name == MANIFEST else path


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a synthetic folder (or of `.../manifest.json`), its file list checked.

    Raises:
        DataError: no manifest (the folder is incomplete: a run was interrupted, or it is not a
            synthetic dataset), invalid JSON, or a file entry that is malformed or leaves the folder.
    """
    folder = folder_of(folder)
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
        if verify and atomic.sha256_file(p) != entry["sha256"]:
            raise DataError(
                f"{p}: sha256 does not match {folder / MANIFEST}; the file changed or is corrupt: "
                "rerun `augment generate` (or dvc pull)"
            )
        out.append(p)
    return out


def _real_table(synthetic: pa.Table, real: Path) -> pa.Table:
    """The real Parquet with a `source` = "real" column, checked to share the class names."""
    table = read_arrow(real)
    check_columns(real, table.schema)
    syn_names = hf_class_names(synthetic.schema)
    real_names = hf_class_names(table.schema)
    if syn_names is not None and real_names is not None and syn_names != real_names:
        raise DataError(f"{real}: class names {real_names} differ from the synthetic data's {syn_names}")
    if "source" not in table.schema.names:
        table = table.append_column("source", pa.array(["real"] * table.num_rows, type=pa.string()))
    return table


def read_shards(
    path: str | Path, mix: str | None = None, real: str | Path | None = None, verify: bool = False
) -> pa.Table:
    """All shards of a synthetic folder as one Arrow table (Hugging Face metadata kept).

    Args:
        path: the folder (e.g. `data/synthetic`) or its `manifest.json`.
        mix: None (synthetic only) or "real+synthetic": the real training split first, then the
            synthetic rows, with a `source` column telling them apart.
        real: the real Parquet for `mix`; default `<folder>/../prepared/train.parquet`.
        verify: check every file's sha256 against the manifest first.

    Raises:
        DataError: no manifest, a listed file missing or (with `verify`) changed, shards whose
            columns differ, class names that differ between real and synthetic data.
    """
    if mix not in MIXES:
        raise ValueError(f"mix={mix!r}; valid: {', '.join(map(str, MIXES))}")
    folder = folder_of(path)
    manifest = read_manifest(folder)
    paths = _manifest_paths(folder, manifest, verify)
    tables = [read_arrow(p) for p in paths]
    for p, t in zip(paths, tables):  # concat_tables would fail with a bare ArrowInvalid
        check_columns(p, t.schema)
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


def read_images(
    path: str | Path, mix: str | None = None, real: str | Path | None = None, verify: bool = False
) -> ImageTable:
    """The folder's rows as an `ImageTable` of decoded uint8 pixels; arguments as `read_shards`.

    Raises:
        DataError: as `read_shards`, and undecodable images (naming the row).
    """
    return decode_table(read_shards(path, mix, real, verify), folder_of(path))
