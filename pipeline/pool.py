"""Fresh draws from a synthetic pool: each epoch takes a given number of rows per class, continuing
a per-class permutation, so no row repeats before its class's pool is used up.

`PoolDraw` is what the classifier trainer uses; `FreshPoolSampler` is the same draw as a
`torch.utils.data.Sampler` for consumers of a generated dataset (the dataset on disk is the pool):

    labels = load_pandas("data/synthetic")["label"].to_numpy()
    sampler = FreshPoolSampler(labels, per_epoch={0: 500, 3: 200}, seed=0)
    DataLoader(dataset, batch_size=64, sampler=sampler)   # call sampler.set_epoch(e) or just iterate again
"""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np
import torch.utils.data


class PoolDraw:
    """Per-class queues over a pool's rows.

    Args:
        labels: (N,) int class of each pool row.
        seed: numpy seed of the permutations (or a numpy Generator to draw from).
    """

    def __init__(self, labels: np.ndarray, seed: int | np.random.Generator) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self._queues: dict[int, list[int]] = {}

    def take(self, c: int, n: int) -> list[int]:
        """`n` rows of class `c` (fewer only if the class has no row), in draw order."""
        if n < 0:
            raise ValueError(f"cannot draw {n} rows of class {c}")
        rows = np.flatnonzero(self.labels == c)
        out: list[int] = []
        while len(out) < n and len(rows):
            queue = self._queues.get(c) or [int(r) for r in self.rng.permutation(rows)]
            k = min(n - len(out), len(queue))
            out += queue[:k]
            self._queues[c] = queue[k:]
        return out

    def epoch(self, per_epoch: Mapping[int, int] | np.ndarray) -> np.ndarray:
        """Sorted row indices of one epoch: per_epoch[c] fresh rows of each class c."""
        items = per_epoch.items() if isinstance(per_epoch, Mapping) else enumerate(per_epoch)
        rows = [r for c, n in items for r in self.take(int(c), int(n))]
        return np.sort(np.asarray(rows, dtype=np.int64))


class FreshPoolSampler(torch.utils.data.Sampler[int]):
    """A sampler over a pool's rows: every pass yields per_epoch[c] fresh rows of each class c in
    a random order (seeded), repeating no row of a class before that class's rows are used up.

    Args:
        labels: (N,) class of each row of the dataset the sampler indexes.
        per_epoch: {class: rows per epoch}; classes left out are not drawn.
        seed: seeds the draws and the order; the same seed gives the same sequence of epochs.
    """

    def __init__(self, labels: np.ndarray, per_epoch: Mapping[int, int], seed: int = 0) -> None:
        labels = np.asarray(labels)
        missing = [c for c, n in per_epoch.items() if n > 0 and not (labels == c).any()]
        if missing:
            raise ValueError(f"per_epoch asks for classes {missing} that have no row in the pool")
        self.per_epoch = dict(per_epoch)
        self._draw = PoolDraw(labels, seed)
        self._order = np.random.default_rng([seed, 1])

    def __len__(self) -> int:
        return int(sum(self.per_epoch.values()))

    def __iter__(self) -> Iterator[int]:
        rows = self._draw.epoch(self.per_epoch)
        return iter(rows[self._order.permutation(len(rows))].tolist())
