"""What every stage reads: the prepared splits and their counts, checked against the params now.

Also the one progress switch of the stages (`set_progress`), and JSON files a stage wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import Config
from pipeline.data import ImageTable
from pipeline.errors import DataError
from pipeline.tables import read_parquet

SPLITS = ("train", "val", "test")
_PROGRESS = {"enabled": True}


def set_progress(enabled: bool) -> None:
    """Show (default) or hide progress bars in long stages."""
    _PROGRESS["enabled"] = enabled


def progress() -> bool:
    """Whether stages show progress bars now (`set_progress`)."""
    return _PROGRESS["enabled"]


def prepared_path(cfg: Config, split: str) -> Path:
    return Path(cfg.paths.prepared) / f"{split}.parquet"


def counts_path(cfg: Config) -> Path:
    return Path(cfg.paths.prepared) / "class_counts.json"


def gan_final_path(cfg: Config) -> Path:
    return Path(cfg.paths.gan) / "final.pt"


def read_prepared(cfg: Config, split: str) -> ImageTable:
    """A prepared split; a clear error if `augment prepare` has not run, or ran with other data params."""
    path = prepared_path(cfg, split)
    if not path.is_file():
        raise DataError(f"{path}: not found; run `augment prepare` first")
    if not counts_path(cfg).is_file():  # written last: without it the splits may be from two runs
        raise DataError(f"{counts_path(cfg)}: not found; `augment prepare` did not finish: run it again")
    read_counts(cfg)  # checks the data params it was prepared with
    return read_parquet(path)


def first_difference(recorded: dict, now: dict, prefix: str) -> str | None:
    """`prefix.key = recorded, the params now say now` for the first differing (nested) key, else None."""
    for key in sorted(set(recorded) | set(now)):
        a, b = recorded.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = first_difference(a, b, f"{prefix}.{key}")
            if found:
                return found
        elif a != b:
            return f"{prefix}.{key} = {a!r}, the params now say {b!r}"
    return None


def read_counts(cfg: Config) -> dict:
    """class_counts.json, refused when it was prepared with other `data` params than cfg's."""
    path = counts_path(cfg)
    if not path.is_file():
        raise DataError(f"{path}: not found; run `augment prepare` first")
    summary = read_json(path, "augment prepare")
    if "data" in summary:  # files of augment before 0.4.0 do not record it
        changed = first_difference(summary["data"], cfg.data.model_dump(mode="json"), "data")
        if changed:
            raise DataError(f"{cfg.paths.prepared}: prepared with {changed}; run `augment prepare`")
    return summary


def read_json(path: Path, remedy: str) -> dict:
    """A JSON object a stage wrote; DataError naming the file and the command that remakes it."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e.__class__.__name__}); run `{remedy}` again") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(obj).__name__}; run `{remedy}` again")
    return obj
