"""What machine a benchmark figure was measured on: CPU model, cores, ISA level, GPU, versions."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import threading

import torch

from pipeline import __version__
from pipeline.device import cpu_bf16_features, cpu_bf16_is_faster

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def code_version() -> dict:
    """The code a figure was measured with: augment's version and the git commit of the checkout
    (short hash, "-dirty" with uncommitted changes to tracked files; None outside a git checkout)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=30).stdout

    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        commit += "-dirty" if git("status", "--porcelain", "--untracked-files=no").strip() else ""
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"augment": __version__, "commit": commit}


def machine_info() -> dict:
    """A JSON-able description recorded beside every figure."""
    info = {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        # native bf16 (AMX, AVX512-BF16) and whether a matmul measured bf16 faster: what precision auto chose
        "bf16_features": cpu_bf16_features(),
        "bf16_faster": cpu_bf16_is_faster(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        **code_version(),
    }
    return info


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, MiB (Linux: ru_maxrss in KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, kids) / 1024, 1)


def tree_rss_bytes(root: int) -> int:
    """Resident memory of process `root` and all its descendants now, in bytes (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])  # field 4, after "(comm)"
            except (OSError, IndexError, ValueError):
                continue  # the process ended while we looked
            children.setdefault(ppid, []).append(int(entry))
    total, todo, page = 0, [root], os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/statm", encoding="utf-8") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
    return total


class TreeMemory:
    """Samples the summed RSS of this process and its worker processes every `interval` seconds
    while the block runs; `peak_mb` is the largest sum seen. `peak_rss_mb` alone would miss
    workers that run side by side (ru_maxrss of children is the largest single one)."""

    def __init__(self, interval: float = 1.0):
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_bytes(os.getpid()))
            self._stop.wait(self.interval)

    @property
    def peak_mb(self) -> float:
        return round(max(self.peak / 2**20, peak_rss_mb()), 1)

    def __enter__(self) -> TreeMemory:
        if os.path.isdir("/proc"):
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
