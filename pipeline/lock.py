"""Run locks: one augment run at a time on any output tree, taken by the CLI and the Prefect flow.

Each folder that holds an output (the parent of every `paths.*`) gets a `.augment.lock`; a run
also takes the existing `.augment.lock` of every folder above its outputs and inside them, so runs
whose outputs nest (one run's folder inside another run's) share a lock, and two working folders
whose params name the same absolute paths wait for each other. `hold_outputs(cfg, timeout, remedy)`
takes them all; the flow takes `project_lock(root, ...)` (its repository's lock) first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import filelock

from pipeline import atomic
from pipeline.errors import AugmentError

if TYPE_CHECKING:
    from pipeline.config import Config

LOCK_NAME = ".augment.lock"
# The flow's lock on its repository (params.yaml, dvc.lock, git); .dvc/tmp is git-ignored by DVC itself.
PROJECT_LOCK = Path(".dvc") / "tmp" / "augment-flow.lock"
PROJECT_OWNER = PROJECT_LOCK.with_suffix(".owner")
# Set by a process that holds the locks for the augment processes it starts (the flow's torchrun).
HELD_ENV = "AUGMENT_LOCK_HELD"
log = logging.getLogger("augment")


class LockBusy(AugmentError):
    """Another run holds a lock for longer than this run would wait."""


class RepositoryBusy(LockBusy):
    """Another flow run holds the repository's lock for longer than this run's `lock_timeout`."""


def _nested_locks(output: Path) -> set[Path]:
    """The `.augment.lock` files already in the folders above `output` and inside it: those of runs
    whose outputs contain this one, or lie within it."""
    found = {folder / LOCK_NAME for folder in output.parents if (folder / LOCK_NAME).is_file()}
    if output.is_dir():
        for folder, _, files in os.walk(output):
            if LOCK_NAME in files:
                found.add(Path(folder) / LOCK_NAME)
    return found


def lock_files(paths: Sequence[str | Path]) -> list[Path]:
    """The locks a run writing `paths` takes, sorted: every run takes them in one order, so two
    never deadlock.

    One per distinct folder holding one of `paths` (relative ones from the working folder, links
    resolved), plus the existing locks above and inside each path (`_nested_locks`).
    """
    outputs = [Path(p).absolute().parent.resolve() / Path(p).name for p in paths]
    files = {out.parent / LOCK_NAME for out in outputs}
    for out in outputs:
        files |= _nested_locks(out)
    return sorted(files)


def output_locks(cfg: Config) -> list[Path]:
    """`lock_files` of every `paths.*` of `cfg`."""
    return lock_files(list(cfg.paths.model_dump().values()))


def _shown(path: Path) -> Path:
    """`path` relative to the working folder when inside it (data/.augment.lock), else absolute."""
    with contextlib.suppress(ValueError):
        return path.relative_to(Path.cwd().resolve())
    return path


@contextlib.contextmanager
def hold(files: Sequence[Path], timeout: float, remedy: str, owner: tuple[Path, str] | None = None,
         error: type[LockBusy] = LockBusy) -> Iterator[None]:
    """Hold every lock in `files`, in the order given, waiting up to `timeout` s in all for other runs.

    Args:
        remedy: what else the user can do, e.g. "pass --lock-timeout SECONDS to wait longer".
        owner: (file, text): `text` is written there once all are held and named by a waiter's error.
        error: the `LockBusy` subclass to raise.

    Raises:
        LockBusy: "another augment run [(owner)] holds <lock> (waited N s); let it finish, or <remedy>".
    """
    deadline = time.monotonic() + timeout
    with contextlib.ExitStack() as held:
        for path in files:
            path.parent.mkdir(parents=True, exist_ok=True)  # just before its turn: a busy first lock creates nothing
            lock = filelock.FileLock(path)
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                left = max(0.0, deadline - time.monotonic())
                log.warning("another augment run holds %s; waiting up to %.0f s", _shown(path), left)
                try:
                    lock.acquire(timeout=left)
                except filelock.Timeout:
                    who = owner[0].read_text(encoding="utf-8").strip() if owner and owner[0].is_file() else None
                    raise error(f"another augment run{f' ({who})' if who else ''} holds {_shown(path)} "
                                f"(waited {timeout:.0f} s); let it finish, or {remedy}") from None
            held.callback(lock.release)
        if owner:
            atomic.write_text(owner[0], owner[1] + "\n")
        yield


@contextlib.contextmanager
def hold_outputs(cfg: Config, timeout: float, remedy: str) -> Iterator[None]:
    """Hold `output_locks(cfg)` while stages write (see `hold`).

    The set is read again once held: a run whose outputs nest with these may have made its lock
    meanwhile; then all are let go and the larger set is taken, in order, within the same timeout.
    Skipped in torchrun ranks other than 0 and in processes whose parent holds the locks
    (HELD_ENV), which would otherwise wait for their own launcher.
    """
    if os.environ.get(HELD_ENV) or os.environ.get("RANK", "0") != "0":
        yield
        return
    deadline = time.monotonic() + timeout
    files = output_locks(cfg)
    while True:
        with hold(files, max(0.0, deadline - time.monotonic()), remedy):
            now = sorted(set(files) | set(output_locks(cfg)))
            if now == files:
                yield
                return
        files = now


@contextlib.contextmanager
def project_lock(root: Path, timeout: float, owner: str, remedy: str) -> Iterator[None]:
    """Hold the repository lock of the flow's project `root` (`PROJECT_LOCK`), naming `owner` to
    waiters; wait up to `timeout` s for another run, then `RepositoryBusy` naming the holder (see `hold`)."""
    with hold([root / PROJECT_LOCK], timeout, remedy, owner=(root / PROJECT_OWNER, owner),
              error=RepositoryBusy):
        yield
