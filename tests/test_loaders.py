"""pipeline.loaders: one typed reader per return type, from a folder or from a tagged DVC version.

The DVC test builds a real release: a git repo with DVC, a local remote folder, a tiny synthetic
folder (and the real split beside it) `dvc add`ed, committed, tagged v1 and pushed; then a second
version is committed. Its cache is then deleted, so reading v1 must come from the remote.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipeline import loaders, release, tables
from pipeline.data import ImageTable
from pipeline.errors import DataError

NAMES = ("zero", "one", "two")


def tiny_table(n_per_class, seed) -> ImageTable:
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)]).astype(np.int64)
    return ImageTable(rng.integers(0, 256, (len(labels), 4, 4, 1), dtype=np.uint8), labels, NAMES)


def write_folder(folder: Path, t: ImageTable, first_seed: int) -> None:
    seeds = first_seed + np.arange(len(t))
    columns = release.synthetic_columns("ab" * 32, seeds, np.full(len(t), np.nan))
    release.write_shards(folder, t, columns, 4, {"plan": {}, "generator": "ab" * 32})


def test_each_loader_returns_its_type(tmp_path):
    t = tiny_table((0, 3, 2), seed=0)
    write_folder(tmp_path / "data" / "synthetic", t, first_seed=100)
    tables.write_parquet(tmp_path / "data" / "prepared" / "train.parquet", tiny_table((4, 1, 1), seed=1))
    folder = tmp_path / "data" / "synthetic"
    table = loaders.load_arrow(folder, verify=True)
    assert isinstance(table, pa.Table) and table.num_rows == 5
    df = loaders.load_pandas(folder / "manifest.json")
    assert isinstance(df, pd.DataFrame) and df["seed"].tolist() == list(range(100, 105))
    back = loaders.load_table(folder)
    np.testing.assert_array_equal(back.images, t.images)
    ds = loaders.load_torch(folder, transform=lambda x: x * 2)
    x, y = ds[0]
    assert y == 1 and float(x.max()) <= 2.0 and np.allclose(x.numpy()[0] * 255 / 2, t.images[0, ..., 0])
    mixed = loaders.load_table(folder, mix="real+synthetic")
    assert len(mixed) == 11 and mixed.class_names == NAMES


@pytest.mark.slow
def test_load_hf_gives_image_and_class_label_features(tmp_path):
    pytest.importorskip("datasets")
    t = tiny_table((2, 0, 1), seed=0)
    write_folder(tmp_path / "syn", t, first_seed=0)
    ds = loaders.load_hf(tmp_path / "syn")
    assert ds.features["label"].names == list(NAMES) and ds["label"] == [0, 0, 2]
    np.testing.assert_array_equal(np.asarray(ds[2]["image"]), t.images[2, ..., 0])


# ----------------------------------------------------------------------------- a DVC-tracked release


def _env() -> dict:
    return dict(os.environ, DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
                GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=_env(), check=True, capture_output=True)


def _release(repo: Path, remote: Path) -> tuple[ImageTable, ImageTable]:
    """v1 (tagged) and a later commit of data/synthetic, both pushed; returns their tables."""
    from dvc.repo import Repo

    git("init", "-q", "-b", "main", cwd=repo)
    Repo.init(str(repo))
    with Repo(str(repo)) as dvc:
        with dvc.config.edit() as conf:
            conf["remote"]["store"] = {"url": str(remote)}
            conf["core"]["remote"] = "store"
    v1, v2 = tiny_table((3, 2, 1), seed=0), tiny_table((1, 1, 4), seed=5)
    tables.write_parquet(repo / "data" / "prepared" / "train.parquet", tiny_table((4, 1, 1), seed=1))
    for version, (t, first_seed) in enumerate(((v1, 100), (v2, 200)), start=1):
        write_folder(repo / "data" / "synthetic", t, first_seed)
        with Repo(str(repo)) as dvc:
            dvc.add(["data/synthetic", "data/prepared/train.parquet"])
            dvc.push()
        git("add", ".", cwd=repo)
        git("commit", "-qm", f"dataset v{version}", cwd=repo)
        if version == 1:
            git("tag", "v1", cwd=repo)
    return v1, v2


@pytest.mark.slow
def test_load_pandas_of_a_tagged_version_reads_it_from_the_dvc_remote(tmp_path, monkeypatch):
    repo, remote, temp = tmp_path / "project", tmp_path / "remote", tmp_path / "temp"
    for d in (repo, remote, temp):
        d.mkdir()
    monkeypatch.chdir(repo)  # dvc.add works relative to the current directory
    v1, v2 = _release(repo, remote)
    monkeypatch.chdir(tmp_path)  # a consumer elsewhere
    shutil.rmtree(repo / ".dvc" / "cache")  # so v1 can only come from the remote
    monkeypatch.setattr(tempfile, "tempdir", str(temp))

    df = loaders.load_pandas("data/synthetic", rev="v1", repo=str(repo))
    assert df["label"].tolist() == v1.labels.tolist()
    assert df["seed"].tolist() == list(range(100, 106))
    assert df["label_name"].tolist() == [NAMES[y] for y in v1.labels]
    # the other loaders take the same revision; the real split comes from it too
    back = loaders.load_table("data/synthetic/manifest.json", rev="v1", repo=str(repo))
    np.testing.assert_array_equal(back.images, v1.images)
    mixed = loaders.load_torch("data/synthetic", mix="real+synthetic", rev="v1", repo=str(repo))
    assert mixed.source == ["real"] * 6 + ["synthetic"] * 6
    # the later commit, through its branch
    latest = loaders.load_pandas("data/synthetic", rev="main", repo=str(repo))
    assert latest["label"].tolist() == v2.labels.tolist() and latest["seed"].iloc[0] == 200
    assert list(temp.iterdir()) == []  # every temporary copy is gone

    with pytest.raises(DataError, match="revision 'v9'"):
        loaders.load_pandas("data/synthetic", rev="v9", repo=str(repo))
    with pytest.raises(DataError, match="data/synthetc: not found in .* at v1"):
        loaders.load_pandas("data/synthetc", rev="v1", repo=str(repo))
    with pytest.raises(DataError, match="not a folder"):
        loaders.load_pandas("data/prepared/train.parquet", rev="v1", repo=str(repo))
