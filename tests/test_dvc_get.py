"""Fetching a version from another project: `dvc get` through a git URL with the remote the README
tells users to set up, and the Prefect flow's fetch hint, run as printed."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_arrays
from pipeline import atomic, release
from pipeline.data import ImageTable

pytestmark = pytest.mark.slow
DVC = str(Path(sys.executable).with_name("dvc"))
ENV = dict(os.environ, DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
           GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")


def sh(cwd: Path, *cmd: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def project(root: Path, remote: str | None) -> dict:
    """A git + DVC repository with a generated data/synthetic versioned as tag v1 (dvc push +
    git tag); `remote` is added as the default remote, else the repository's in-repo default."""
    root.mkdir()
    sh(root, "git", "init", "-q")
    sh(root, DVC, "init", "-q")
    sh(root, DVC, "remote", "add", "-d", "local", ".dvc-remote")  # inside, as the augment checkout has
    if remote is not None:
        sh(root, DVC, "remote", "add", "-d", "store", remote)  # the README's step for sharing
    (root / ".gitignore").write_text("/.dvc-remote/\n")
    x, y = tiny_arrays((5, 0, 4))
    manifest = release.write_shards(root / "data" / "synthetic", ImageTable(x, y, ["a", "b", "c"]),
                                    {"source": "synthetic"}, 4, {}, export_images=True)
    sh(root, DVC, "add", "-q", "data/synthetic")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-q", "-m", "v1")
    sh(root, "git", "tag", "v1")
    sh(root, DVC, "push", "-q")
    return manifest


def same_shards(folder: Path, manifest: dict) -> bool:
    return all(atomic.sha256_file(folder / f["path"]) == f["sha256"] for f in manifest["files"])


def test_dvc_get_through_a_git_url_with_the_readme_s_remote(tmp_path):
    manifest = project(tmp_path / "repo", remote=str(tmp_path / "shared-remote"))
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    sh(consumer, DVC, "get", f"file://{tmp_path / 'repo'}", "data/synthetic", "--rev", "v1", "-o", "synthetic")
    assert same_shards(consumer / "synthetic", manifest)
    assert (consumer / "synthetic" / "images" / "1-b" / ".keep").is_file()  # the empty class's folder too


def test_the_flow_s_fetch_hint_works_with_the_default_remote_and_an_unpushed_tag(tmp_path):
    from pipeline.versioning import fetch_hint, remote_inside

    root = tmp_path / "repo"
    manifest = project(root, remote=None)
    bare = tmp_path / "origin.git"
    sh(tmp_path, "git", "init", "-q", "--bare", str(bare))
    sh(root, "git", "remote", "add", "origin", f"file://{bare}")  # an origin that never got the tag
    assert remote_inside(root)
    for pushed in (False, True):  # in-repo data: even a pushed tag is fetched from this checkout
        hint = fetch_hint(root, "v1", ["data/synthetic"], pushed=pushed)
        assert hint.startswith(f"dvc get {root.resolve()} ")
        consumer = tmp_path / f"consumer-{pushed}"
        consumer.mkdir()
        sh(consumer, DVC, *shlex.split(hint)[1:])
        assert same_shards(consumer / "synthetic", manifest)
