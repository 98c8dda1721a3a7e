"""What another project does with a release: the README's consumer snippets, run as written against
a folder that `augment generate` made (a plan that leaves a class out, ImageFolder export on)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from pathlib import Path

import pytest

from pipeline import cli
from test_bad_inputs import write_npz

REPO = Path(__file__).resolve().parents[1]
PARAMS = """\
data: {source: src, long_tail: {profile: none}}
train_gan: {steps: 4, batch_size: 8, checkpoint_every: 2, sample_every: 4, ema_warmup: 0, device: cpu}
generate: {shard_size: 5, export_images: true}
"""


def readme_block(section: str, lang: str) -> str:
    """The first ```lang block under the README heading `section`."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{lang}\n(.*?)```", body, re.S).group(1)


@pytest.fixture(scope="module")
def consumer(tmp_path_factory) -> Path:
    """A project folder holding `synthetic/` (a release, as `dvc get ... -o synthetic` leaves it)
    and the prepared data the snippets mix in."""
    root = tmp_path_factory.mktemp("consumer")
    write_npz(root / "src")
    (root / "params.yaml").write_text(PARAMS)
    with contextlib.chdir(root):
        for stage in ("prepare", "plan", "train-gan", "generate"):
            assert cli.main([stage, "-q"]) == 0, stage
    shutil.copytree(root / "data" / "synthetic", root / "synthetic")
    return root


@pytest.mark.slow
def test_the_readme_consumer_snippets_run_on_a_generated_folder(consumer, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(consumer / "hf"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(consumer)
    manifest = json.loads((consumer / "synthetic" / "manifest.json").read_text())
    plan = json.loads((consumer / "data" / "plan.json").read_text())
    assert 0 in plan.values(), "the plan must leave a class out for this test to mean anything"
    ns: dict = {}
    exec(compile(readme_block("Consuming a generated dataset", "python"), "README.md", "exec"), ns)

    rows = manifest["rows"]
    assert len(ns["df"]) == rows and ns["table"].num_rows == rows
    assert ns["classes"] == manifest["class_names"]
    assert ns["ds"].features["label"].names == ns["classes"] and len(ns["ds"]) == rows
    # ImageFolder: every image's index is its shard label, though a class has no image
    label_of = {r["image"]["path"]: r["label"] for r in ns["df"].to_dict("records")}
    folder = ns["folder"]
    assert len(folder.classes) == len(ns["classes"])
    assert {Path(p).relative_to("synthetic").as_posix(): y for p, y in folder.samples} == label_of
    assert [c.split("-", 1)[1] for c in folder.classes] == ns["classes"]
    real = json.loads((consumer / "data" / "prepared" / "class_counts.json").read_text())["counts"]["train"]
    assert len(ns["dataset"]) == sum(real.values()) + rows
