"""The CLI as users run it: stages write their files; bad input exits non-zero with one line."""

import json

import numpy as np
import pytest

from conftest import run_cli


def _one_line_error(proc, code=2):
    assert proc.returncode == code, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_prepare_and_plan_on_digits(tmp_path):
    run_cli("prepare", cwd=tmp_path, check=True)
    proc = run_cli("plan", cwd=tmp_path, check=True)
    counts = json.loads((tmp_path / "data/prepared/class_counts.json").read_text())
    plan = json.loads((tmp_path / "data/plan.json").read_text())
    train = counts["counts"]["train"]
    assert max(train.values()) / min(train.values()) >= 9  # exponential profile, ratio 10
    assert {c: train[c] + plan[c] for c in train} == {c: max(train.values()) for c in train}
    assert "total" in proc.stdout
    for split in ("train", "val", "test"):
        assert (tmp_path / f"data/prepared/{split}.parquet").is_file()


def test_npz_source_with_params_file(tmp_path, npz_folder):
    (tmp_path / "params.yaml").write_text(
        f"data:\n  source: {npz_folder}\n  long_tail:\n    profile: counts\n    counts: [9, 4, 2]\n"
    )
    run_cli("prepare", cwd=tmp_path, check=True)
    counts = json.loads((tmp_path / "data/prepared/class_counts.json").read_text())
    assert counts["counts"]["train"] == {"zero": 9, "one": 4, "two": 2}
    assert counts["counts"]["test"] == {"zero": 3, "one": 3, "two": 3}
    run_cli("plan", "--set", "plan.sampling_strategy={two: 5}", cwd=tmp_path, check=True)
    assert json.loads((tmp_path / "data/plan.json").read_text()) == {"zero": 0, "one": 0, "two": 3}


def test_a_source_other_than_the_demo_keeps_its_own_class_counts(tmp_path, npz_folder):
    """The default profile (auto) makes only the balanced demo long-tailed: a user's data keeps
    every image of the training split unless a profile is asked for."""
    run_cli("prepare", "--set", f"data.source={npz_folder}", cwd=tmp_path, check=True)
    default = json.loads((tmp_path / "data/prepared/class_counts.json").read_text())["counts"]
    run_cli("prepare", "--set", f"data.source={npz_folder}", "--set", "data.long_tail.profile=none",
            cwd=tmp_path, check=True)
    none = json.loads((tmp_path / "data/prepared/class_counts.json").read_text())["counts"]
    assert default == none and sum(default["train"].values()) + sum(default["val"].values()) == 26
    run_cli("prepare", "--set", f"data.source={npz_folder}", "--set", "data.long_tail.profile=exponential",
            cwd=tmp_path, check=True)
    asked = json.loads((tmp_path / "data/prepared/class_counts.json").read_text())["counts"]["train"]
    assert sum(asked.values()) < sum(default["train"].values())  # the profile, when asked for, cuts


def test_a_closed_stdout_ends_quietly(tmp_path):
    """`augment show-params | head`: the reader goes away; no BrokenPipeError traceback."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "show-params"], cwd=tmp_path, stdout=write,
                          stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    os.close(write)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


def test_each_stage_s_help_says_what_it_reads_and_writes():
    from pipeline import cli

    for name in cli.STAGES:
        text = cli._parser()._subparsers._group_actions[0].choices[name].format_help()
        assert "read" in text and "->" in text and "data/" in text, name


def test_unknown_key_exit_2(tmp_path):
    line = _one_line_error(run_cli("prepare", "--set", "data.sorce=x", cwd=tmp_path))
    assert "data.sorce" in line and "did you mean 'data.source'" in line


def test_bad_value_exit_2(tmp_path):
    line = _one_line_error(run_cli("prepare", "--set", "data.long_tail.profile=zipf", cwd=tmp_path))
    assert "data.long_tail.profile" in line and "'exponential'" in line


def test_plan_before_prepare(tmp_path):
    line = _one_line_error(run_cli("plan", cwd=tmp_path))
    assert "class_counts.json: not found; run `augment prepare` first" in line


def test_failed_prepare_keeps_earlier_outputs(tmp_path, npz_folder):
    run_cli("prepare", "--set", f"data.source={npz_folder}", "--set", "data.long_tail.profile=none",
            cwd=tmp_path, check=True)
    before = {p.name: p.read_bytes() for p in (tmp_path / "data/prepared").iterdir()}
    with np.load(npz_folder / "train.npz") as z:
        y = z["y"].copy()
        y[3] = 9
        np.savez(npz_folder / "train.npz", x=z["x"], y=y)
    line = _one_line_error(run_cli("prepare", "--set", f"data.source={npz_folder}", cwd=tmp_path))
    assert "train.npz: row 3: label 9 out of range" in line
    after = {p.name: p.read_bytes() for p in (tmp_path / "data/prepared").iterdir()}
    assert after == before


def test_impossible_plan_names_class(tmp_path):
    run_cli("prepare", cwd=tmp_path, check=True)
    line = _one_line_error(run_cli("plan", "--set", "plan.sampling_strategy={nine: 5}", cwd=tmp_path))
    assert "plan.sampling_strategy" in line and "'nine'" in line and "valid classes" in line


@pytest.mark.parametrize("arg", ["data.source", "=1", "a..b=1"])
def test_malformed_set(tmp_path, arg):
    _one_line_error(run_cli("plan", "--set", arg, cwd=tmp_path))
