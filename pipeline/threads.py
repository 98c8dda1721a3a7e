"""The CPU thread budget: how many cores are free now, and how many torch threads to use.

On a shared machine a torch run with one thread per core collapses when a neighbour is busy: its
OpenMP threads meet at a barrier after every operator, and the one sharing a core with the
neighbour arrives late, while the others spin. `pipeline.cores.free_cores` reads how busy the
cores this process may use have been over a short window (Linux `/proc/stat`; elsewhere the load
average), and `choose_threads("auto")` runs on the free ones only, never more than the process's budget
(`OMP_NUM_THREADS`, `torch.set_num_threads`, the CPU affinity). The OpenMP wait policy is left as
libgomp's default (spin, then sleep): OMP_WAIT_POLICY=PASSIVE measured 17% slower alone and
helped less beside a neighbour than running on the free cores (BENCHMARKS.md "Shared cores").

The thread count changes how floating-point sums are split, so a run is byte-reproducible for the
same count: the count chosen is logged and recorded with the run's outputs.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from pipeline.cores import available_cores, free_cores, threads_for

AUTO = "auto"


def choose_threads(setting: int | str | None, budget: int | None = None) -> int | None:
    """The thread count for a `cpu_threads` setting: an int as given, None unchanged (torch's
    default), "auto" the free cores within `budget` (default: torch's current thread count, which
    `OMP_NUM_THREADS` sets)."""
    if setting is None or isinstance(setting, int):
        return setting
    if setting != AUTO:
        raise ValueError(f"cpu_threads must be a number, null or {AUTO!r}, not {setting!r}")
    if budget is None:
        budget = torch.get_num_threads()
    return threads_for(free_cores(), min(budget, available_cores()))


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` torch CPU threads (None: unchanged), then restore the previous count."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)

