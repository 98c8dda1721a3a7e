"""Worker processes for independent classifier runs: order, errors, how many, same results."""

import os
from pathlib import Path

import pytest
import torch

from pipeline import parallel
from pipeline.errors import TrainingError
from pipeline.parallel import Workers, resolve_workers


def _scaled(shared, unit):
    return shared["k"] * unit, torch.get_num_threads(), os.getpid()


def _fails_on_three(shared, unit):
    if unit == 3:
        raise ValueError(f"unit {unit} is bad")
    return unit


def _dies(shared, unit):
    os._exit(3)


def test_results_come_back_in_order_from_other_processes_with_one_thread_each():
    with Workers(2, None, {"k": 10}) as pool:
        out = list(pool.map(_scaled, list(range(7))))
        again = list(pool.map(_scaled, [1, 2]))  # the same processes serve the next map
    assert [v for v, _, _ in out] == [10 * i for i in range(7)]
    assert {threads for _, threads, _ in out} == {1}
    pids = {pid for _, _, pid in out + again}
    # the pool's two processes serve both maps (no new ones); which of them ran which unit depends
    # on the load: a process that starts late may serve none of the first map's units
    assert os.getpid() not in pids and len(pids) <= 2


def test_one_worker_or_one_unit_runs_here():
    for workers, units in ((1, [1, 2, 3]), (4, [5])):
        out = list(Workers(workers, None, {"k": 2}).map(_scaled, units))
        assert [v for v, _, _ in out] == [2 * u for u in units]
        assert {pid for _, _, pid in out} == {os.getpid()}


def test_a_unit_error_is_raised_here():
    with Workers(2, 1, {}) as pool, pytest.raises(ValueError, match="unit 3 is bad"):
        list(pool.map(_fails_on_three, [1, 2, 3, 4]))


def test_a_dead_worker_is_a_clear_error():
    with Workers(2, 1, {}) as pool, pytest.raises(TrainingError, match="evaluate.workers"):
        list(pool.map(_dies, [1, 2]))


def test_resolve_workers(monkeypatch):
    monkeypatch.setattr(parallel, "available_cores", lambda: 8)
    monkeypatch.setattr(parallel, "free_cores", lambda: 8.0)
    cpu = torch.device("cpu")
    assert resolve_workers("auto", 1, cpu) == 8
    assert resolve_workers("auto", None, cpu) == 8
    assert resolve_workers("auto", 3, cpu) == 2
    assert resolve_workers("auto", 16, cpu) == 1
    assert resolve_workers(3, 1, cpu) == 3
    assert resolve_workers("auto", 1, torch.device("cuda")) == 1
    # a busy neighbour holds 2.5 of the 8 cores: auto uses the 5 whole free ones (5.5 idle)
    monkeypatch.setattr(parallel, "free_cores", lambda: 5.5)
    assert resolve_workers("auto", 1, cpu) == 5
    assert resolve_workers(3, 1, cpu) == 3  # an explicit count is kept


def test_workers_end_when_their_parent_is_killed(tmp_path):
    """kill -9 of the process that owns the pool: its workers notice and exit, none is orphaned."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "owner.py"
    script.write_text(
        "import os, sys, time\n"
        "from pipeline.parallel import Workers\n"
        "def pid_then_sleep(shared, unit):\n"
        "    print(os.getpid(), flush=True)\n"
        "    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    with Workers(2, 1, None) as pool:\n"
        "        list(pool.map(pid_then_sleep, [1, 2]))\n"
    )
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                             cwd=str(Path(__file__).resolve().parents[1]))
    try:
        pids = [int(owner.stdout.readline()) for _ in range(2)]
        assert all(_alive(pid) for pid in pids)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in pids), f"workers {pids} outlived their parent"
    finally:
        owner.kill()


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by init, counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
