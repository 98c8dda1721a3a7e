"""`augment generate` with the quality filter, end to end on tiny data: without `fill` a class
the filter rejects keeps fewer rows than the plan, the manifest says how many, and evaluate's
reader takes the release as it is."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import torch

from pipeline import cli
from pipeline import recipes
from pipeline.card import filter_summary
from pipeline.params_file import load
from pipeline.generate import lowest_score
from pipeline.stages.synthetic import read_synthetic
from conftest import tiny_arrays
from test_bad_inputs import write_npz

PARAMS = """\
data: {source: src, long_tail: {profile: none}}
train_gan: {steps: 4, batch_size: 8, checkpoint_every: 2, sample_every: 4, ema_warmup: 0, device: cpu}
generate: {shard_size: 5, filter: {enabled: true, tau: 0.5, max_oversample: 3.0, epochs: 1}}
"""


def test_generate_without_fill_keeps_the_accepted_rows_alone(tmp_path):
    write_npz(tmp_path / "src", counts=(12, 6, 4))
    (tmp_path / "params.yaml").write_text(PARAMS)
    with contextlib.chdir(tmp_path):
        for stage in ("prepare", "plan", "train-gan"):
            assert cli.main([stage, "-q"]) == 0, stage
        assert cli.main(["generate", "-q", "--set", "generate.filter.fill=true"]) == 0
        filled = json.loads((tmp_path / "data/synthetic/manifest.json").read_text())
        filled_card = (tmp_path / "data/synthetic/README.md").read_text()
        assert cli.main(["generate", "-q", "--set", "generate.filter.fill=false"]) == 0
        manifest = json.loads((tmp_path / "data/synthetic/manifest.json").read_text())
        card = (tmp_path / "data/synthetic/README.md").read_text()
        table, scores = read_synthetic(load(overrides={"generate.filter.fill": False}))
    plan = {c: n for c, n in manifest["plan"].items() if n}
    stats = manifest["filter"]
    assert filled["rows"] == sum(plan.values())  # filled: every class gets its quota
    # a 4-step GAN against a trained judge: some class must fall short for the test to mean anything
    assert any(stats[c]["accepted"] < n for c, n in plan.items())
    assert manifest["rows"] == sum(stats[c]["accepted"] for c in plan) == len(table)
    assert all(stats[c]["below_tau"] == 0 for c in plan)
    kept = dict(zip(*np.unique(table.labels, return_counts=True)))
    names = list(table.class_names)
    assert {names[i]: int(n) for i, n in kept.items()} == {c: stats[c]["accepted"] for c in plan if stats[c]["accepted"]}
    assert (scores >= 0.5).all()
    # the dataset card says what the filter did, naming each short class
    short = [c for c, n in plan.items() if stats[c]["accepted"] < n]
    passed = sum(stats[c]["accepted"] for c in plan)
    assert f"The quality filter (p(class) >= 0.5 under a real-data judge) passed {passed} of the {sum(plan.values())} planned images" in card
    assert all(f"{c} {stats[c]['accepted']} of {plan[c]}" in card for c in short) and "keep fewer images." in card
    assert "best-scoring rejected images." in filled_card


def test_two_judges_score_each_row_by_the_lower_of_their_probabilities(tmp_path):
    write_npz(tmp_path / "src", counts=(12, 6, 4))
    (tmp_path / "params.yaml").write_text(PARAMS)
    scores = {}
    with contextlib.chdir(tmp_path):
        for stage in ("prepare", "plan", "train-gan"):
            assert cli.main([stage, "-q"]) == 0, stage
        for judges in (1, 2):  # tau 0: every tried row passes, so both releases hold the same rows
            sets = {"generate.filter.tau": 0.0, "generate.filter.judges": judges}
            assert cli.main(["generate", "-q", *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]) == 0
            table, scores[judges] = read_synthetic(load(overrides=sets))
    one, two = np.asarray(scores[1]), np.asarray(scores[2])
    assert one.shape == two.shape == (len(table),)
    # judge 1 (seed 0) is the same model both times; the second judge (seed 1) only lowers a score
    assert (two <= one + 1e-6).all() and (two < one - 1e-3).any()


def test_lowest_score_by_hand():
    a = lambda x, y: torch.tensor([0.9, 0.2, 0.5])  # noqa: E731
    b = lambda x, y: np.array([0.95, 0.1, 0.5])  # noqa: E731
    got = lowest_score([a, b], torch.zeros(3, 1, 2, 2), torch.zeros(3, dtype=torch.long))
    assert torch.allclose(got, torch.tensor([0.9, 0.1, 0.5]))


def test_card_filter_text_by_hand():
    assert filter_summary(None) == ""
    ok = {"a": {"quota": 5, "tried": 6, "accepted": 5, "below_tau": 0}}
    assert filter_summary(ok) == " The quality filter passed 5 of the 5 planned images."
    assert filter_summary(ok, {"tau": 0.9, "judges": 2}) == (
        " The quality filter (p(class) >= 0.9 under each of 2 real-data judges) passed 5 of the 5 planned images.")
    short = {**ok, "b|c": {"quota": 4, "tried": 16, "accepted": 1, "below_tau": 3}}
    assert filter_summary(short) == (" The quality filter passed 6 of the 9 planned images; classes short of their "
                                   "quota (b\\|c 1 of 4) were filled with their 3 best-scoring rejected images.")


def test_filter_auto_is_on_for_the_colour_recipe_alone():
    assert [recipes.filter_on("auto", r) for r in ("small_color", "small_gray", "tiny_gray", "demo", "none")] == [
        True, False, False, False, False]
    assert recipes.filter_on(True, "demo") and not recipes.filter_on(False, "small_color")


def _generate(root, x, y, params) -> dict:
    (root / "src").mkdir(parents=True)
    np.savez(root / "src" / "train.npz", x=x, y=y)
    np.savez(root / "src" / "test.npz", x=x[::2], y=y[::2])
    (root / "params.yaml").write_text(params)
    with contextlib.chdir(root):
        for stage in ("prepare", "plan", "train-gan", "generate"):
            assert cli.main([stage, "-q"]) == 0, stage
    return json.loads((root / "data/synthetic/manifest.json").read_text())


def test_generate_filters_colour_images_by_default_and_gray_ones_not(tmp_path):
    params = """\
data: {source: src, long_tail: {profile: none}}
train_gan: {steps: 4, batch_size: 8, checkpoint_every: 2, sample_every: 4, ema_warmup: 0, device: cpu, guide_weight: 0.0}
generate: {shard_size: 5, filter: {epochs: 1}}
"""
    x, y = tiny_arrays((12, 6, 4), size=8, channels=3)
    colour = _generate(tmp_path / "colour", x, y, params)
    assert colour["params"]["train_gan"]["recipe"] == "small_color"
    assert colour["params"]["generate"]["filter"]["enabled"] == "auto"
    assert set(colour["filter"]) == {c for c, n in colour["plan"].items() if n}
    assert colour["rows"] == sum(s["accepted"] for s in colour["filter"].values())
    # evaluate records what the filter did, and the report's quality section says it
    with contextlib.chdir(tmp_path / "colour"):
        assert cli.main(["evaluate", "-q", "--set", "evaluate.strategies=[none,gan]", "--set", "evaluate.seeds=1",
                         "--set", "evaluate.epochs=1"]) == 0
        assert cli.main(["report", "-q"]) == 0
        metrics = json.loads(Path("data/reports/metrics.json").read_text())
        report = Path("data/reports/report.md").read_text()
    assert metrics["generation_filter"] == colour["filter"]
    assert metrics["generation_filter_rule"] == colour["params"]["generate"]["filter"]
    # the report names the rule, as the dataset card does: what passing meant
    said = filter_summary(colour["filter"], colour["params"]["generate"]["filter"]).strip()
    assert "(p(class) >= 0.9 under a real-data judge)" in said and said in report
    gray = _generate(tmp_path / "gray", x[..., 0], y, params)
    assert gray["params"]["train_gan"]["recipe"] == "demo" and gray["filter"] is None
    assert gray["rows"] == sum(gray["plan"].values())
