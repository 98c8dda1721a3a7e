"""The in-memory image table, stratified splits and long-tail profiles.

An `ImageTable` is what every stage passes around: uint8 NHWC pixels, int64 labels and the class
names. Splits and long-tail subsampling take an explicit `seed` and never touch the global RNG.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import DataError

# The MNIST-LT profile of DeepSMOTE (Dablain et al. 2022): images kept per class, class 0 first.
DEEPSMOTE_MNIST_COUNTS = (4000, 2000, 1000, 750, 500, 350, 200, 100, 60, 40)


@dataclass(frozen=True)
class ImageTable:
    """Images with labels: `images` uint8 (N, H, W, C), `labels` int64 (N,) in [0, len(class_names)).

    `groups` optionally ties images that must stay on one side of a split (e.g. GTSRB tracks).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    groups: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        imgs, labels = self.images, self.labels
        if imgs.dtype != np.uint8 or imgs.ndim != 4 or imgs.shape[-1] not in (1, 3):
            raise DataError(
                f"images must be uint8 (N, H, W, C) with C in (1, 3), got {imgs.dtype} {imgs.shape}"
            )
        if labels.ndim != 1 or len(labels) != len(imgs):
            raise DataError(f"{len(imgs)} images but labels of shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"labels must be integers, got {labels.dtype}")
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        k = len(self.class_names)
        if len(labels) and (labels.min() < 0 or labels.max() >= k):
            bad = int(np.flatnonzero((labels < 0) | (labels >= k))[0])
            raise DataError(
                f"row {bad}: label {int(labels[bad])} out of range 0..{k - 1} ({k} class names)"
            )
        if self.groups is not None and len(self.groups) != len(imgs):
            raise DataError(f"{len(imgs)} images but {len(self.groups)} group ids")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C)."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def counts(self) -> np.ndarray:
        """Images per class, int64 (num_classes,), zeros included."""
        return np.bincount(self.labels, minlength=self.num_classes).astype(np.int64)

    def counts_by_name(self) -> dict[str, int]:
        return {name: int(n) for name, n in zip(self.class_names, self.counts())}

    def subset(self, index: np.ndarray) -> "ImageTable":
        """Rows `index` (an integer or boolean array), same class names."""
        groups = None if self.groups is None else self.groups[index]
        return ImageTable(self.images[index], self.labels[index], self.class_names, groups)

    @staticmethod
    def concat(tables: list["ImageTable"]) -> "ImageTable":
        """Rows of several tables with the same class names and image shape."""
        first = tables[0]
        for t in tables[1:]:
            if t.class_names != first.class_names or t.image_shape != first.image_shape:
                raise DataError("cannot concatenate tables with different classes or image shapes")
        groups = None
        if all(t.groups is not None for t in tables):
            groups = np.concatenate([t.groups for t in tables])
        return ImageTable(
            np.concatenate([t.images for t in tables]),
            np.concatenate([t.labels for t in tables]),
            first.class_names,
            groups,
        )


def check_classes(table: ImageTable, where: str, hint: str = "add images of it or remove the class") -> None:
    """Refuse tables with fewer than two classes or a class without any image.

    Args:
        hint: what to do about an empty class, in the source's terms (its reader's `Source.empty_hint`).
    """
    if table.num_classes < 2:
        raise DataError(f"{where}: {table.num_classes} class(es); need at least two to classify")
    counts = table.counts()
    empty = [table.class_names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(f"{where}: class(es) {', '.join(map(repr, empty))} have no image; {hint}")


def stratified_split(
    table: ImageTable, val_fraction: float, seed: int
) -> tuple[ImageTable, ImageTable]:
    """Split into (train, val) keeping each class's proportion.

    Each class puts round(n * val_fraction) images in val, but always keeps at least one image in
    train, and gives val one image only when the class has at least two. When `table.groups` is
    set, whole groups move together (so near-duplicates never straddle the split).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    val_mask = np.zeros(len(table), dtype=bool)
    for c in range(table.num_classes):
        idx = np.flatnonzero(table.labels == c)
        if len(idx) < 2 or val_fraction == 0.0:
            continue
        if table.groups is None:
            n_val = min(max(1, round(len(idx) * val_fraction)), len(idx) - 1)
            val_mask[rng.permutation(idx)[:n_val]] = True
        else:
            groups = np.unique(table.groups[idx])
            if len(groups) < 2:
                continue
            n_val = min(max(1, round(len(groups) * val_fraction)), len(groups) - 1)
            chosen = rng.permutation(groups)[:n_val]
            val_mask[idx[np.isin(table.groups[idx], chosen)]] = True
    return table.subset(~val_mask), table.subset(val_mask)


def exponential_profile(n_max: int, num_classes: int, ratio: float) -> list[int]:
    """Counts n_max * ratio^(-i/(K-1)) for class i (the CIFAR-LT convention); class 0 largest."""
    if ratio < 1:
        raise ValueError(f"long-tail ratio must be >= 1, got {ratio}")
    if num_classes == 1:
        return [n_max]
    return [
        max(1, int(n_max * ratio ** (-i / (num_classes - 1)))) for i in range(num_classes)
    ]


def long_tail_counts(
    counts: np.ndarray, profile: str, ratio: float | None = None, explicit: list[int] | None = None,
    fraction: float | None = None,
) -> list[int]:
    """Target images per class for a long-tail `profile` applied to a table with `counts`.

    Profiles: `exponential` (ratio rho, head = the smallest class count), `deepsmote` (the MNIST
    profile 4000..40; needs 10 classes), `counts` (explicit per-class counts), `fraction` (keep
    round(n * fraction) of every class, at least 1: the data's own imbalance, smaller).
    """
    k = len(counts)
    if profile == "exponential":
        if ratio is None:
            raise ValueError("profile 'exponential' needs a ratio")
        target = exponential_profile(int(counts.min()), k, ratio)
    elif profile == "deepsmote":
        if k != len(DEEPSMOTE_MNIST_COUNTS):
            raise DataError(
                f"the deepsmote profile is for 10 classes, the data has {k}; "
                "use data.long_tail.profile=exponential or counts"
            )
        target = list(DEEPSMOTE_MNIST_COUNTS)
    elif profile == "counts":
        if explicit is None or len(explicit) != k:
            n = None if explicit is None else len(explicit)
            raise DataError(f"data.long_tail.counts must list {k} counts (one per class), got {n}")
        target = [int(c) for c in explicit]
    elif profile == "fraction":
        if fraction is None or not 0 < fraction <= 1:
            raise ValueError(f"profile 'fraction' needs a fraction in (0, 1], got {fraction}")
        target = [max(1, round(int(n) * fraction)) for n in counts]
    else:
        raise ValueError(f"unknown long-tail profile {profile!r}; valid: exponential, deepsmote, counts, fraction")
    short = [(i, t, int(n)) for i, (t, n) in enumerate(zip(target, counts)) if t > n]
    if short:
        i, t, n = short[0]
        raise DataError(f"long-tail profile wants {t} images of class {i} but the data has {n}; "
                        "lower data.long_tail.counts or pick another profile")
    return target


def impose_long_tail(table: ImageTable, target: list[int], seed: int) -> ImageTable:
    """Keep a seeded random `target[c]` images of each class c, in their original order."""
    rng = np.random.default_rng(seed)
    keep = []
    for c, n in enumerate(target):
        idx = np.flatnonzero(table.labels == c)
        keep.append(np.sort(rng.choice(idx, size=n, replace=False)))
    return table.subset(np.sort(np.concatenate(keep)))


def random_oversample(table: ImageTable, add: np.ndarray, seed: int) -> ImageTable:
    """Append add[c] copies of images of class c drawn at random with replacement."""
    rng = np.random.default_rng(seed)
    extra = [
        rng.choice(np.flatnonzero(table.labels == c), int(n), replace=True)
        for c, n in enumerate(add)
        if n > 0
    ]
    if not extra:
        return table
    return ImageTable.concat([table, table.subset(np.concatenate(extra))])


def data_fingerprint(table: ImageTable) -> str:
    """sha256 over image shape, class names, labels (int64) and image bytes: the version of a table
    (final.pt and judge.pt are written for it; metrics.json records it for each split)."""
    h = hashlib.sha256()
    h.update(json.dumps([list(table.images.shape), list(table.class_names)]).encode())
    h.update(np.ascontiguousarray(table.labels, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(table.images).tobytes())
    return h.hexdigest()
