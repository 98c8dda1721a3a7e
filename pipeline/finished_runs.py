"""Finished evaluation runs kept on disk, so a stopped `evaluate` resumes where it stopped.

An evaluation is strategies x seeds independent runs (`pipeline.evaluate`), each minutes of
training. Each finished run's predictions are written here, one Parquet file per run, named by a
digest of everything its predictions depend on (`run_key` + strategy, seed and mixing policy).
A later evaluation with the same inputs reads them instead of training again: after a kill, a
disk-full error or a crash, and when strategies or seeds are added to a finished evaluation. The
evaluation's real-data judge is kept beside them (`judge_path`) for the same inputs.

What goes into the digest: the `evaluate` settings (less those that do not change a run: the lists
of strategies and seeds, the worker count, the GAN-quality switch, the selection rule), the
fingerprints of every split and of the synthetic data, the plan, the source of the `pipeline`
package, the torch version, the device, the CPU's instruction set, the thread count and the precision. A change to
any of them gives new names, so a stale run is never read; `prune` then removes the old files.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline import atomic

log = logging.getLogger("augment")

# `evaluate` fields that do not change any single run's predictions
UNKEYED = ("strategies", "seeds", "workers", "gan_quality", "select_by", "reuse_runs")
SECONDS = b"augment.seconds"
SUFFIX = ".parquet"
JUDGE_PREFIX = "judge-"
PACKAGE = Path(__file__).resolve().parent


@functools.cache
def code_digest(package: Path = PACKAGE) -> str:
    """sha256 over the path and bytes of every .py file of the package: any edit gives new names."""
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def run_key(settings: dict, fingerprints: dict[str, str], plan: list[int], device: str, precision: str) -> str:
    """The digest shared by every run of one evaluation. `settings` is the `evaluate` section as a
    dict, `fingerprints` {split: `data.data_fingerprint`}, `plan` the images added per class."""
    kept = {k: v for k, v in settings.items() if k not in UNKEYED}
    doc = {
        "settings": kept, "threads": kept.get("cpu_threads") or torch.get_num_threads(),
        "data": fingerprints, "plan": [int(n) for n in plan], "code": code_digest(),
        "torch": torch.__version__, "device": device, "cpu": torch.backends.cpu.get_cpu_capability(),
        "precision": precision,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _mix_digest(mix) -> str:
    """A `mixing.Mix` (gan_policy's chosen policy) as text: its policy and the rows it kept."""
    if mix is None:
        return "-"
    h = hashlib.sha256(repr(mix.policy).encode())
    h.update(np.ascontiguousarray(mix.rows, dtype="<i8").tobytes())
    return h.hexdigest()


def real_fingerprints(fingerprints: dict[str, str]) -> dict[str, str]:
    """`fingerprints` less the synthetic data's: what a run that uses real images only depends on."""
    return {split: fp for split, fp in fingerprints.items() if split != "synthetic"}


class FinishedRuns:
    """One evaluation's finished runs in `folder`: `load` and `save` one run by (strategy, seed, mix).

    `key` names the runs of strategies that use the synthetic data; `real_key` (default `key`) those
    named in `real_only`, the strategies that use real images only, and the evaluation's judge."""

    def __init__(self, folder: str | Path, key: str, real_key: str | None = None, real_only=frozenset()):
        self.folder, self.key = Path(folder), key
        self.real_key, self.real_only = real_key or key, frozenset(real_only)

    def path(self, name: str, seed: int, mix=None) -> Path:
        key = self.real_key if name in self.real_only else self.key
        digest = hashlib.sha256(f"{key}|{name}|{seed}|{_mix_digest(mix)}".encode()).hexdigest()[:20]
        safe = "".join(c if c.isalnum() or c in "+-_" else "_" for c in name)
        return self.folder / f"{safe}-seed{seed}-{digest}{SUFFIX}"

    def load(self, name: str, seed: int, mix=None) -> tuple[pd.DataFrame, float] | None:
        """(predictions, the seconds the run took when it trained), or None when it has not finished."""
        path = self.path(name, seed, mix)
        if not path.is_file():
            return None
        try:
            table = pq.read_table(path)
            seconds = float((table.schema.metadata or {}).get(SECONDS, b"0"))
            return table.to_pandas(), seconds
        except (OSError, ValueError, pa.ArrowException) as e:  # unreadable: train the run again
            log.warning("%s: unreadable (%s); the run trains again", path, e)
            return None

    def save(self, name: str, seed: int, mix, frame: pd.DataFrame, seconds: float) -> Path:
        """Write one run's predictions atomically (a kill leaves the file whole or absent)."""
        path = self.path(name, seed, mix)
        self.folder.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), SECONDS: str(seconds).encode()})
        with atomic.atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return path

    @property
    def _judge_file(self) -> Path:
        return self.folder / f"{JUDGE_PREFIX}{self.real_key[:20]}.pt"

    def judge_path(self) -> Path:
        """Where the evaluation's real-data judge of these inputs is kept (`judge.cached_judge`); the
        folder is made."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return self._judge_file

    def prune(self, keep: set[Path]) -> int:
        """Remove the run files not in `keep` (runs of other inputs), judges of other inputs and any
        temporary file; the count."""
        if not self.folder.is_dir():
            return 0
        removed = atomic.clean_temporaries(self.folder)
        stale = [p for p in self.folder.glob(f"*{SUFFIX}") if p not in keep]
        stale += [p for p in self.folder.glob(f"{JUDGE_PREFIX}*.pt") if p != self._judge_file]
        for path in stale:
            path.unlink(missing_ok=True)
        return removed + len(stale)
