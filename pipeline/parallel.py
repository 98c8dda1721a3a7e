"""Run independent units of work (one classifier per strategy and seed, one per mixing policy) in
worker processes, so small models trained on one thread each still use every core.

`with Workers(n, threads, shared) as pool: pool.map(fn, units)` yields `fn(shared, unit)` for
each unit, in order; `shared` (the data tables) is sent once per worker, not once per unit, and
the processes are started once, on the first map that has work for them, and kept for the next.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, Sequence

import torch

from pipeline.errors import TrainingError
from pipeline.cores import available_cores, free_cores, threads_for

_SHARED: Any = None


def resolve_workers(workers: int | str, threads: int | None, device: torch.device) -> int:
    """How many processes to use: `workers` as given, or for "auto" the cores that are free now
    (`pipeline.threads.free_cores`, within this process's CPU affinity) divided by the torch threads
    each worker runs (`threads`, None = 1); 1 on a GPU (one device). Each unit's result does not
    depend on the number of workers, only on `threads`."""
    if device.type != "cpu":
        return 1
    if workers == "auto":
        free = threads_for(free_cores(), available_cores())
        return max(1, free // max(1, threads or 1))
    return max(1, int(workers))


def _start_worker(shared: Any, threads: int | None, parent: int) -> None:
    global _SHARED
    _SHARED = shared
    # one thread per worker unless told otherwise: the workers share the cores between them
    torch.set_num_threads(threads or 1)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int, interval: float = 0.5) -> None:
    """End this worker soon after its parent dies (a kill -9 of `augment` runs no clean-up, and a
    worker waiting on the pool's queue would otherwise live on, holding its copy of the data)."""
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


def _call(fn: Callable[[Any, Any], Any], unit: Any) -> Any:
    return fn(_SHARED, unit)


class Workers:
    """`workers` spawned processes holding `shared`, each running torch with `threads` threads.

    With `workers` <= 1 every unit runs in this process. Spawn, not fork: a fork of a process that
    has run OpenMP threads can hang. So `fn` must be a module-level function, `shared`, the units
    and the results picklable, and a script that calls augment needs an `if __name__ == "__main__":`
    guard (the workers import the main module). An exception in a unit is raised from `map`.
    """

    def __init__(self, workers: int, threads: int | None, shared: Any):
        self.workers, self.threads, self.shared = workers, threads, shared
        self._pool: ProcessPoolExecutor | None = None

    def map(self, fn: Callable[[Any, Any], Any], units: Sequence) -> Iterator:
        """Yield `fn(shared, unit)` for each unit, in the order of `units`."""
        if self.workers <= 1 or len(units) <= 1:
            for unit in units:
                yield fn(self.shared, unit)
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker, initargs=(self.shared, self.threads, os.getpid()))
        try:
            yield from self._pool.map(_call, [fn] * len(units), units)
        except BrokenProcessPool as e:
            raise TrainingError(
                f"a worker process died while running {len(units)} units in {self.workers} processes: killed, "
                "out of memory, or started from a script whose top level calls augment without an "
                "`if __name__ == '__main__':` guard (workers are spawned and import the main module). "
                "Lower evaluate.workers, or set it to 1 to run the units in this process"
            ) from e

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
