"""kill -9 inside each stage at its worst moments (a file half written, between the renames of a
stage's files, mid-training): no visible file is half-written, earlier outputs stay intact or lose
their completion marker (and later stages refuse them), and a rerun ends byte-identical to an
uninterrupted run. One test per stage walks through its fault points in turn."""

from __future__ import annotations

import json

import pytest

from faultlib import Project, assert_whole, outcome, reference
from pipeline import params_file
from pipeline.stages import stage as stage_function
from pipeline.errors import DataError

pytestmark = pytest.mark.slow


def same_outcome(project: Project, prefix: str) -> None:
    """The project's outputs under `prefix` equal the uninterrupted reference run's, file for file."""
    mine = {k: v for k, v in outcome(project.root).items() if k.startswith(prefix)}
    ref = {k: v for k, v in outcome(reference().root).items() if k.startswith(prefix)}
    assert mine and mine == ref


def refused(project: Project, monkeypatch, stage: str, fragment: str) -> None:
    """Stage `stage` refuses the project's incomplete outputs with a DataError naming `fragment`."""
    monkeypatch.chdir(project.root)
    with pytest.raises(DataError, match=fragment):
        stage_function(stage)(params_file.load())


def test_kill_during_prepare(tmp_path, monkeypatch):
    p = Project(tmp_path / "p")
    p.ok("prepare", "-q", "--set", "data.long_tail.ratio=3")  # earlier outputs, of other params
    before = p.visible()
    # 1. val.parquet half written, nothing renamed yet: the earlier outputs are as they were
    p.killed("prepare", "-q", fault="torn:.tmp-val.parquet.*:1")
    assert_whole(p.root)
    assert p.visible() == before
    # 2. between the renames: train.parquet is new, class_counts.json (renamed last) is gone
    p.killed("prepare", "-q", fault="after:train.parquet:1")
    assert_whole(p.root)
    assert "data/prepared/class_counts.json" not in p.visible()
    refused(p, monkeypatch, "train_gan", "`augment prepare` did not finish")
    refused(p, monkeypatch, "plan", "class_counts.json: not found")
    # 3. the rerun: the uninterrupted outputs, and no leftover
    p.ok("prepare", "-q")
    same_outcome(p, "data/prepared")
    assert not list((p.root / "data/prepared").glob(".tmp-*"))


def test_kill_during_train_gan_resumes_to_the_same_weights(tmp_path, monkeypatch):
    p = Project(tmp_path / "p")
    p.copy_outputs(reference(), ["prepare", "plan"])
    gan = p.root / "data/models/gan"

    def left() -> set[str]:
        assert_whole(p.root)  # every .pt that is there loads in full
        return {f.name for f in gan.glob("*.pt")}

    # 1. in the middle of step 7: checkpoint 4 is there, no final.pt
    p.killed("train-gan", "-q", fault="call:pipeline.gan.train_step:7")
    assert left() == {"checkpoint-4.pt"}
    refused(p, monkeypatch, "generate", "final.pt: not found")
    # 2. resumed from step 4, killed while final.pt is half written (checkpoint 8 is whole)
    p.killed("train-gan", "-q", fault="torn:final.pt:1")
    assert left() == {"checkpoint-4.pt", "checkpoint-8.pt"}
    # 3. the rerun resumes from step 8 and ends with the uninterrupted run's weights
    proc = p.ok("train-gan")
    assert "resuming from checkpoint-8.pt" in proc.stderr
    same_outcome(p, "data/models/gan/final.pt")
    assert not list(gan.glob(".tmp-*"))


def test_kill_during_generate(tmp_path, monkeypatch):
    p = Project(tmp_path / "p")
    p.copy_outputs(reference(), ["prepare", "plan", "train_gan"])
    p.ok("generate", "-q", "--set", "generate.seed=7")  # an earlier dataset, other pixels
    before = p.visible()
    # 1. killed while staging the 4th shard: the earlier dataset is whole and verifies
    p.killed("generate", "-q", fault="torn:.tmp-stage-train-00003-of-00006.parquet:1")
    assert_whole(p.root)
    assert p.visible() == before
    # 2. killed in the switch, 3 new shards in place: no manifest, so readers refuse the folder
    p.killed("generate", "-q", fault="after:train-00002-of-00006.parquet:1")
    assert_whole(p.root)
    assert "data/synthetic/manifest.json" not in p.visible()
    refused(p, monkeypatch, "evaluate", "`augment generate` did not finish")
    # 3. the rerun: every file of the uninterrupted run, and nothing else
    p.ok("generate", "-q")
    same_outcome(p, "data/synthetic")
    names = sorted(f.name for f in (p.root / "data/synthetic").iterdir())
    assert names == sorted(f.name for f in (reference().root / "data/synthetic").iterdir())


def test_kill_during_evaluate(tmp_path, monkeypatch):
    p = Project(tmp_path / "p")
    p.copy_outputs(reference(), ["prepare", "plan", "train_gan", "generate"])
    p.ok("evaluate", "-q", "--set", "evaluate.seed=3")  # earlier results, of another seed
    before = p.visible()
    # 1. killed while training the second strategy (in this process: the fault hook is not in
    # spawned workers; test_parallel covers a kill of a pool's owner): earlier results stay as they
    # were, and the one classifier run that finished is kept for the rerun (pipeline.finished_runs)
    p.killed("evaluate", "-q", "--set", "evaluate.workers=1", fault="call:pipeline.evaluate.run_strategy:2")
    assert_whole(p.root)
    after = p.visible()
    assert {k: v for k, v in after.items() if k in before} == before
    kept = [k for k in after if k not in before]
    assert all(k.startswith("data/reports/runs/") for k in kept), kept
    assert len([k for k in kept if k.endswith(".parquet")]) == 1, kept  # and the judge, when the run has one
    assert len([k for k in kept if not k.endswith(".parquet")]) <= 1 and all(
        k.split("/")[-1].startswith("judge-") for k in kept if not k.endswith(".parquet")), kept
    # 2. between the renames: predictions.parquet is new, metrics.json (renamed last) is gone
    p.killed("evaluate", "-q", fault="after:predictions.parquet:1")
    assert_whole(p.root)
    assert "data/reports/metrics.json" not in p.visible()
    refused(p, monkeypatch, "report", "metrics.json: not found")
    # 3. the rerun reads the finished runs back: the uninterrupted run's predictions and metrics
    # (timings and reused_runs aside)
    p.ok("evaluate", "-q")
    assert json.loads((p.root / "data/reports/metrics.json").read_text())["reused_runs"] > 0
    same_outcome(p, "data/reports")
    same_outcome(p, "metrics.json")
    assert not list((p.root / "data/reports").glob(".tmp-*"))
