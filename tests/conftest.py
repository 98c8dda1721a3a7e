"""Shared fixtures: tiny datasets written in every supported layout, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data import impose_long_tail, stratified_split
from pipeline.sources import ImageSpec, read_digits

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


def tiny_arrays(counts=(6, 4, 3), size=8, channels=1, seed=0):
    """Images whose mean brightness encodes the class, so they are learnable; uint8 NHWC."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)]).astype(np.int64)
    base = (labels[:, None, None, None] * 60 + 30).astype(np.int16)
    noise = rng.integers(-20, 20, (len(labels), size, size, channels))
    return np.clip(base + noise, 0, 255).astype(np.uint8), labels


def long_tailed_digits(counts: list[int]):
    """sklearn's 8x8 digits as (train, val, test) ImageTables: 30% test, 15% of the rest val, then
    the training split cut to `counts` images per class (a long tail)."""
    pool, test = stratified_split(read_digits(ImageSpec(None, None, True)).train, 0.3, seed=1000)
    train, val = stratified_split(pool, 0.15, seed=0)
    return impose_long_tail(train, counts, seed=0), val, test


def make_npz_folder(folder: Path) -> Path:
    """Write a tiny dataset in the ../shared/datasets layout (train.npz, test.npz, classes.json)."""
    folder.mkdir(parents=True)
    x, y = tiny_arrays((12, 8, 6))
    np.savez(folder / "train.npz", x=x[..., 0], y=y)
    xt, yt = tiny_arrays((3, 3, 3), seed=1)
    np.savez(folder / "test.npz", x=xt[..., 0], y=yt)
    (folder / "classes.json").write_text('["zero", "one", "two"]')
    return folder


@pytest.fixture
def npz_folder(tmp_path):
    """A folder in the ../shared/datasets layout: train.npz, test.npz, classes.json."""
    return make_npz_folder(tmp_path / "npz")


@pytest.fixture
def image_folder(tmp_path):
    """An ImageFolder tree with PNG and JPEG files, RGB."""
    root = tmp_path / "imgs"
    x, y = tiny_arrays((5, 4, 3), channels=3)
    for i, (img, label) in enumerate(zip(x, y)):
        d = root / f"class_{label}"
        d.mkdir(parents=True, exist_ok=True)
        ext = "jpg" if i % 2 else "png"
        Image.fromarray(img).save(d / f"{i}.{ext}")
    return root


def run_cli(*args: str, cwd: Path, check: bool = False) -> subprocess.CompletedProcess:
    """`augment ARGS` in a subprocess in `cwd` (as a user would run it)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"augment {' '.join(args)} failed:\n{proc.stderr}")
    return proc
