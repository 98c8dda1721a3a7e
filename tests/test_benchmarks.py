"""Each benchmark script runs on tiny data in seconds, so they cannot rot."""

import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

TINY = ["--set", "train_gan.steps=4", "--set", "train_gan.batch_size=8", "--set", "train_gan.checkpoint_every=2",
        "--set", "train_gan.sample_every=2", "--set", "evaluate.epochs=1", "--set", "evaluate.gan_quality=false",
        "--set", "evaluate.strategies=[none,class_weight,gan,gan_policy]",
        "--set", "evaluate.mix.cap_ratio=[1]", "--set", "evaluate.mix.min_score=[0.0]",
        "--set", "evaluate.mix.synthetic_weight=[1.0]", "--set", "data.val_fraction=0.3"]


def test_outcome_on_tiny_npz(tmp_path, npz_folder):
    out = tmp_path / "tiny.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/outcome.py"), "--data", str(npz_folder), "--long-tail", "natural",
         "--out", str(out), "--seeds", "2", "--workdir", str(tmp_path / "work"), *TINY],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for key in ("command", "machine", "dataset", "profile", "wall_s", "peak_rss_mb", "strategies", "gain"):
        assert key in result
    assert result["dataset"] == "npz" and result["profile"] == "natural"
    assert set(result["strategies"]) == {"none", "class_weight", "gan", "gan_policy"}
    assert len(result["strategies"]["none"]["balanced_accuracy"]["per_seed"]) == 2
    assert result["machine"]["cpu_capability"]
