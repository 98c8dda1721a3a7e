"""End to end through DVC: `dvc repro` in a temporary git repo, version it, consume it elsewhere."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slow

# Small enough to run every stage on 2 cores in about a minute.
SMALL_PARAMS = {
    "data": {"long_tail": {"profile": "exponential", "ratio": 5}},
    "train_gan": {"steps": 30, "batch_size": 32, "checkpoint_every": 15, "sample_every": 15},
    "generate": {"batch_size": 64, "shard_size": 300},
    "evaluate": {"seeds": 2, "epochs": 2, "strategies": ["none", "class_weight", "gan"]},
}


def _env() -> dict:
    bin_dir = str(Path(sys.executable).parent)
    return dict(os.environ, PATH=bin_dir + os.pathsep + os.environ["PATH"], DVC_NO_ANALYTICS="1",
                GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
                GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")


def sh(*cmd: str, cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def project_copy(dest: Path) -> Path:
    """The project's files as git sees them (tracked and untracked-not-ignored), in a new git repo."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    sh("git", "init", "-q", "-b", "main", cwd=dest)
    sh("git", "add", "-A", cwd=dest)
    sh("git", "commit", "-qm", "project", cwd=dest)
    return dest


def _small_params(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    for section, values in SMALL_PARAMS.items():
        if section in params:
            for k, v in values.items():
                if isinstance(v, dict):
                    params[section].setdefault(k, {}).update(v)
                else:
                    params[section][k] = v
    assert "prepare" in stages
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _sha(path: Path) -> dict[str, str]:
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_repro_version_and_consume(tmp_path):
    repo = project_copy(tmp_path / "project")
    _small_params(repo)
    sh("dvc", "repro", cwd=repo)
    assert "up to date" in sh("dvc", "status", cwd=repo).lower()
    shown = sh("dvc", "metrics", "show", cwd=repo)  # summary.json only: a table that fits a terminal
    assert "summary.json" in shown and max(map(len, shown.splitlines())) < 120, shown
    sh("dvc", "push", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "augment run", cwd=repo)
    sh("git", "tag", "v1", cwd=repo)

    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    product = "data/synthetic" if "generate" in stages else "data/plan.json"
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    sh("dvc", "get", str(repo), product, "--rev", "v1", "-o", "got", cwd=consumer)
    sh("git", "init", "-q", cwd=consumer)
    sh("dvc", "init", "-q", cwd=consumer)
    sh("dvc", "import", str(repo), product, "--rev", "v1", "-o", "imported", cwd=consumer)
    assert _sha(consumer / "got") == _sha(repo / product) == _sha(consumer / "imported")

    # one param changed: only the stages downstream of it run again
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["plan"]["sampling_strategy"] = "minority"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("dvc", "repro", cwd=repo)
    assert "Running stage 'prepare'" not in out
    assert "Running stage 'plan'" in out
    if "train_gan" in stages:
        assert "Running stage 'train_gan'" not in out
