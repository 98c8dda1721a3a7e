"""Run locks: one augment run at a time on any output folder, taken by the CLI and the Prefect flow.

Each folder that holds an output (the parent of every `paths.*`) gets a `.augment.lock`, so two
working folders whose params name the same absolute paths wait for each other. `hold_outputs(cfg,
timeout, remedy)` takes them all; the flow also takes `hold([its repository lock], ...)` first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import filelock

from pipeline import io
from pipeline.errors import AugmentError

if TYPE_CHECKING:
    from pipeline.config import Config

LOCK_NAME = ".augment.lock"
# Set by a process that holds the locks for the augment processes it starts (the flow's torchrun).
HELD_ENV = "AUGMENT_LOCK_HELD"
log = logging.getLogger("augment")


class LockBusy(AugmentError):
    """Another run holds a lock for longer than this run would wait."""


def lock_files(paths: Sequence[str | Path]) -> list[Path]:
    """The lock file of each distinct folder holding one of `paths` (relative ones from the working
    folder, links resolved), sorted: every run takes them in one order, so two never deadlock."""
    folders = {Path(p).absolute().parent.resolve() for p in paths}
    return [folder / LOCK_NAME for folder in sorted(folders)]


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
            io.write_text(owner[0], owner[1] + "\n")
        yield


@contextlib.contextmanager
def hold_outputs(cfg: Config, timeout: float, remedy: str) -> Iterator[None]:
    """Hold `output_locks(cfg)` while stages write (see `hold`).

    Skipped in torchrun ranks other than 0 and in processes whose parent holds the locks
    (HELD_ENV), which would otherwise wait for their own launcher.
    """
    if os.environ.get(HELD_ENV) or os.environ.get("RANK", "0") != "0":
        yield
        return
    with hold(output_locks(cfg), timeout, remedy):
        yield
