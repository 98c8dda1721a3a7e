"""The report's figures, drawn with matplotlib's object API (no pyplot, no global state) and returned
as PNG bytes: per-class recall, confusion matrices, GAN losses, the real-vs-synthetic grid and the
closest synthetic/training pairs. `pipeline.report_sections` puts each in a figure block.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.data import ImageTable


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _show(ax, img: np.ndarray) -> None:
    """uint8 HWC image on an axis without ticks (grayscale for one channel)."""
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def recall_figure(metrics: dict, strategies: list[str]) -> bytes:
    """Per-class recall (mean over seeds) of `strategies`, classes sorted by training frequency."""
    names, counts = metrics["class_names"], np.array(metrics["train_counts"])
    order = np.argsort(-counts, kind="stable")
    fig = Figure(figsize=(max(6, 0.6 * len(names)), 3.6))
    ax = fig.subplots()
    for s in strategies:
        r = metrics["strategies"][s]["per_class_recall"]["mean"]
        ax.plot(range(len(order)), [np.nan if r[i] is None else r[i] for i in order], marker="o", label=s)
    ax.set_xticks(range(len(order)), [f"{names[i]}\n({counts[i]})" for i in order], fontsize=8)
    ax.set_xlabel("class (training images), most frequent first")
    ax.set_ylabel("test recall")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return _png(fig)


def confusion_figure(metrics: dict, strategies: list[str]) -> bytes:
    """Row-normalised mean confusion matrices (true class in rows), one panel per strategy."""
    names = metrics["class_names"]
    fig = Figure(figsize=(4.2 * len(strategies), 4))
    axes = np.atleast_1d(fig.subplots(1, len(strategies)))
    for ax, s in zip(axes, strategies):
        cm = np.array(metrics["strategies"][s]["confusion"], dtype=float)
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1e-12)
        ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
        ax.set_title(s)
        ticks = range(len(names))
        ax.set_xticks(ticks, names, fontsize=7, rotation=90)
        ax.set_yticks(ticks, names, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    return _png(fig)


def loss_figure(losses: pd.DataFrame) -> bytes:
    """Discriminator and generator loss against step."""
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    for col in ("d_loss", "g_loss"):
        ax.plot(losses["step"], losses[col], label=col, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def grid_figure(train: ImageTable, synthetic: ImageTable, per_class: int = 6, seed: int = 0) -> bytes:
    """One row per class with synthetic images: `per_class` real training images, then synthetic ones."""
    rng = np.random.default_rng(seed)
    classes = [c for c in range(train.num_classes) if np.any(synthetic.labels == c)]
    cols = 2 * per_class + 1
    fig = Figure(figsize=(0.6 * cols, 0.65 * len(classes) + 0.4))
    axes = np.array(fig.subplots(len(classes), cols, squeeze=False))
    for r, c in enumerate(classes):
        for part, table, offset in (("real", train, 0), ("synthetic", synthetic, per_class + 1)):
            idx = np.flatnonzero(table.labels == c)
            pick = rng.choice(idx, min(per_class, len(idx)), replace=False)
            for j in range(per_class):
                ax = axes[r, offset + j]
                ax.axis("off")
                if j < len(pick):
                    _show(ax, table.images[pick[j]])
            if r == 0:
                axes[0, offset].set_title(part, fontsize=8, loc="left")
        axes[r, per_class].axis("off")
        axes[r, per_class].text(0.5, 0.5, train.class_names[c], ha="center", va="center", fontsize=8)
    return _png(fig)


def pairs_figure(train: ImageTable, synthetic: ImageTable, pairs: list[dict]) -> bytes:
    """Closest synthetic/training pairs: synthetic on top, its nearest training image below."""
    fig = Figure(figsize=(1.1 * len(pairs), 2.6))
    axes = np.array(fig.subplots(2, len(pairs), squeeze=False))
    for j, p in enumerate(pairs):
        _show(axes[0, j], synthetic.images[p["synthetic"]])
        _show(axes[1, j], train.images[p["train"]])
        axes[0, j].set_title(f"{p['distance']:.3f}", fontsize=7)
    axes[0, 0].set_ylabel("synthetic", fontsize=8)
    axes[1, 0].set_ylabel("nearest\ntrain", fontsize=8)
    return _png(fig)
