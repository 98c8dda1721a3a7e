"""How many CPU cores this process may use, and how many of them are idle now (no torch: the
readers of images and the command line use it too). `pipeline.threads` turns these into torch
thread counts; why that matters on a shared machine is in its docstring.
"""

from __future__ import annotations

import os
import time


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
