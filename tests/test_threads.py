"""The CPU thread budget: free-core arithmetic, `/proc/stat` reading, and the auto choice."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from pipeline import cores, threads
from pipeline.cores import free_cores, threads_for
from pipeline.threads import choose_threads, cpu_threads


@pytest.mark.parametrize(("free", "budget", "expected"), [
    (2.0, 2, 2),    # both idle
    (1.0, 2, 1),    # a busy neighbour on one core
    (1.75, 2, 2),   # 0.75 idle counts as a core (> 70%)
    (1.6, 2, 1),    # 0.6 does not
    (0.1, 2, 1),    # never fewer than one thread
    (7.9, 4, 4),    # never more than the budget
])
def test_threads_for(free, budget, expected):
    assert threads_for(free, budget) == expected


def test_free_cores_from_proc_stat(monkeypatch):
    """Two cpus, 100 jiffies each between the readings: cpu0 fully busy, cpu1 25% busy -> 0.75 free."""
    readings = iter([
        "cpu  0 0 0 0 0 0 0 0\ncpu0 100 0 0 0 0 0 0 0\ncpu1 10 0 0 90 0 0 0 0\nintr 5\n",
        "cpu  0 0 0 0 0 0 0 0\ncpu0 200 0 0 0 0 0 0 0\ncpu1 35 0 0 165 0 0 0 0\nintr 9\n",
    ])

    class Stat:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return next(readings)

    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr("builtins.open", lambda *a, **k: Stat())
    assert free_cores(window_s=0) == pytest.approx(0.75)


@pytest.mark.alone
def test_free_cores_sees_a_busy_neighbour():
    """A real spinning process on this machine takes about one core away from what is free."""
    idle = free_cores(0.5)
    if idle < 1.5:
        pytest.skip(f"only {idle:.1f} cores idle before the neighbour starts: too busy to tell")
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        busy = free_cores(0.5)
    finally:
        spin.kill()
        spin.wait()
    assert busy <= idle - 0.5, (idle, busy)


def test_choose_threads_settings(monkeypatch):
    monkeypatch.setattr(threads, "free_cores", lambda: 1.0)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    assert choose_threads(None) is None
    assert choose_threads(3) == 3
    assert choose_threads("auto", budget=2) == 1
    monkeypatch.setattr(threads, "free_cores", lambda: 2.0)
    assert choose_threads("auto", budget=2) == 2
    assert choose_threads("auto", budget=1) == 1  # OMP_NUM_THREADS=1 is a cap, not a hint
    with pytest.raises(ValueError, match="cpu_threads"):
        choose_threads("many")


def test_cpu_threads_restores():
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
