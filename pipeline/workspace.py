"""The project's working tree during a flow run: params.yaml edits, and putting back what a failed run changed.

`write_params` applies a run's overrides to params.yaml (comments kept); `rollback_on_failure`
makes the working tree match the last version again if the run fails, and `restore_interrupted`
does the same for a run killed outright (its record is kept under .dvc/tmp).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

from ruamel.yaml import YAML

from pipeline import atomic, params_file
from pipeline.versioning import dvc_executable, head

PENDING = Path(".dvc") / "tmp" / "augment-flow.pending.json"  # what a run in progress must put back if it fails
log = logging.getLogger("augment")


@contextlib.contextmanager
def working_dir(root: Path) -> Iterator[None]:
    """Run in `root`: stage paths in params.yaml (and the data source) are relative to it."""
    before = Path.cwd()
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(before)


def write_params(root: Path, overrides: dict[str, Any]) -> None:
    """Apply `overrides` to params.yaml in place, keeping its comments (ruamel round trip)."""
    if not overrides:
        return
    yaml = YAML()
    # keep `null` spelled out, as in the file we were given (ruamel writes an empty value)
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    path = root / params_file.PARAMS_FILE
    tree = yaml.load(path.read_text(encoding="utf-8")) if path.is_file() else None
    tree = tree if tree is not None else {}
    for key, value in overrides.items():
        params_file.set_dotted(tree, key, value)
    with atomic.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        yaml.dump(tree, f)


def _restore(root: Path, record: dict) -> None:
    """Put params.yaml and dvc.lock back as `record` saved them, then the outputs dvc.lock names."""
    if head(root) != record["head"]:
        return  # the version was committed: the working tree matches it already
    for name, text in record["files"].items():
        if text is None:
            (root / name).unlink(missing_ok=True)
        elif not (root / name).is_file() or (root / name).read_text(encoding="utf-8") != text:
            atomic.write_text(root / name, text)
    if record["files"].get("dvc.lock") is not None:
        proc = subprocess.run([dvc_executable(), "checkout", "--force"], cwd=root, capture_output=True, text=True)
        if proc.returncode != 0:
            log.warning("`dvc checkout` could not put the outputs back: %s", proc.stderr.strip())


def restore_interrupted(root: Path) -> bool:
    """Undo what a killed run left half-done (its record survives it); True if there was one."""
    if not (root / PENDING).is_file():
        return False
    log.warning("a previous run on %s was interrupted; putting back params.yaml, dvc.lock and the outputs", root)
    _restore(root, json.loads((root / PENDING).read_text(encoding="utf-8")))
    (root / PENDING).unlink()
    return True


@contextlib.contextmanager
def rollback_on_failure(root: Path) -> Iterator[None]:
    """On any failure put back params.yaml, dvc.lock and the outputs of the last version.

    Nothing in git, the DVC cache or the remote is changed before the run has succeeded, so the
    previous version stays whole; this makes the working tree match it again. What to put back is
    also written to .dvc/tmp first, so a run killed outright is undone by the next one.
    """
    restore_interrupted(root)
    names = (params_file.PARAMS_FILE, "dvc.lock")
    files = {n: (root / n).read_text(encoding="utf-8") if (root / n).is_file() else None for n in names}
    record = {"head": head(root), "files": files}
    atomic.write_json(root / PENDING, record)
    try:
        yield
    except BaseException:
        _restore(root, record)
        raise
    finally:
        (root / PENDING).unlink(missing_ok=True)
