"""The CPU thread budget: how many cores are free now, and how many torch threads to use.

On a shared machine a torch run with one thread per core collapses when a neighbour is busy: its
OpenMP threads meet at a barrier after every operator, and the one sharing a core with the
neighbour arrives late, while the others spin. `free_cores` reads how busy the cores this process
may use have been over a short window (Linux `/proc/stat`; elsewhere the load average), and
`choose_threads("auto")` runs on the free ones only, never more than the process's budget
(`OMP_NUM_THREADS`, `torch.set_num_threads`, the CPU affinity). The OpenMP wait policy is left as
libgomp's default (spin, then sleep): OMP_WAIT_POLICY=PASSIVE measured 17% slower alone and
helped less beside a neighbour than running on the free cores (BENCHMARKS.md "Shared cores").

The thread count changes how floating-point sums are split, so a run is byte-reproducible for the
same count: the count chosen is logged and recorded with the run's outputs.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator

import torch

AUTO = "auto"


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and `taskset` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpu_times(cpus: set[int]) -> tuple[int, int] | None:
    """(busy, total) jiffies summed over `cpus`, from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    busy = total = 0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        idle = values[3] + values[4]
        total += sum(values)
        busy += sum(values) - idle
    return (busy, total) if total else None


def free_cores(window_s: float = 0.3) -> float:
    """How many of this process's cores were idle over the last `window_s` seconds (a float:
    1.6 means one core idle and another 60% idle). Falls back to cores minus the 1-minute load."""
    try:
        cpus = set(os.sched_getaffinity(0))
    except AttributeError:
        cpus = set(range(os.cpu_count() or 1))
    first = _cpu_times(cpus)
    if first is None:
        try:
            return max(0.0, len(cpus) - os.getloadavg()[0])
        except (AttributeError, OSError):
            return float(len(cpus))
    time.sleep(window_s)
    second = _cpu_times(cpus)
    busy, total = second[0] - first[0], second[1] - first[1]
    if total <= 0:
        return float(len(cpus))
    return len(cpus) * (1.0 - busy / total)


def threads_for(free: float, budget: int) -> int:
    """Torch threads for `free` idle cores within a `budget` of threads: the whole idle cores
    (a core more than 70% idle counts), at least 1, at most the budget."""
    whole = int(free + 0.3)
    return max(1, min(budget, whole))


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

