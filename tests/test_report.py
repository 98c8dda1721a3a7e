"""The report: verdict sentences, self-contained HTML, Markdown with its PNGs, and the plot CSVs."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import metrics as M
from pipeline import quality as Q
from pipeline import recommend as Rec
from pipeline import report as R
from pipeline import report_document as RD
from pipeline import report_sections as RS
from pipeline import strategies as S
from pipeline.data import ImageTable
from pipeline.models.classifiers import build_classifier
from tests.conftest import tiny_arrays

NAMES = ("a", "b", "c")


def _gain(per_seed: list[float], verdict: str) -> dict:
    return {"metrics": None, "gain": {"baseline": "smote", "selected_by": "validation balanced accuracy",
                                      "balanced_accuracy": M.mean_ci(per_seed), "verdict": verdict}}


@pytest.mark.parametrize("per_seed, verdict, expected", [
    ([0.03, 0.05, 0.04], "gain", r"^Gain: .* raises balanced accuracy by \+4\.0 points .* against smote"),
    ([0.03, -0.01, 0.01], "no gain", r"^No gain: .* \+1\.0 points .* the interval includes 0\.$"),
    ([-0.03, -0.05, -0.04], "no gain", r"^No gain: .* lowers balanced accuracy by 4\.0 points"),
    ([0.02], "undetermined", r"^No gain can be claimed: .*one seed"),
])
def test_verdict_sentences(per_seed, verdict, expected):
    assert re.search(expected, RS.verdict(_gain(per_seed, verdict)))


def test_verdict_says_when_the_chosen_policy_adds_no_gan_images():
    m = _gain([-0.01, 0.0, -0.02], "no gain")
    m["gain"]["strategy"] = "gan_policy"
    m["mix_policy"] = {"chosen": {"name": "cap=0x score>=0 w=1+cw", "synthetic_rows": 0}}
    assert re.search(r"^No gain: the mixing policy chosen on validation \(cap=0x score>=0 w=1\+cw\) adds none "
                     r"of the GAN's images, .* real data alone: -1\.0 points", RS.verdict(m))
    m["mix_policy"]["chosen"]["synthetic_rows"] = 5  # it added some: the usual sentence
    assert RS.verdict(m).startswith("No gain: adding the GAN's images")


def test_policy_table_marks_the_staged_search_and_probe_rows():
    row = lambda name, acc, stage, eligible: {"name": name, "synthetic_rows": 0 if "0x" in name else 9, "stage": stage,
                                              "eligible": eligible, "val_balanced_accuracy": acc, "val_balanced_nll": 0.1}
    grid = [row("cap=0x score>=0 w=1", 0.9, 1, False), row("cap=0x score>=0 w=1+cw", 0.8, 1, False),
            row("cap=all score>=0 w=1", 0.85, 2, True)]
    blocks = RS.policy_blocks({"mix_policy": {"chosen": grid[2], "grid": grid, "scores_from": "judge",
                                             "synthetic_per_class": {"a": 9}, "judge_score_mean_per_class": {"a": 0.5}}})
    assert "Search staged: class weighting was decided on the real data alone" in blocks[1].text
    names = [r[0] for r in blocks[2].rows[1:]]
    assert names == ["cap=0x score>=0 w=1 (class-weighting probe only: cap_ratio lists no 0)",
                     "cap=all score>=0 w=1 (chosen)",
                     "cap=0x score>=0 w=1+cw (class-weighting probe only: cap_ratio lists no 0)"]


def test_verdict_without_synthetic_data_says_why():
    m = {"gain": {"balanced_accuracy": None, "reason": "strategy 'gan' was not run"},
         "skipped": {"gan": "no synthetic data were given (run `augment generate`)"}}
    assert RS.verdict(m).startswith("No verdict on GAN augmentation: no synthetic data were given")


def _predictions(rng: np.random.Generator, y: np.ndarray) -> pd.DataFrame:
    rows = []
    for strategy, skill in (("none", 0.6), ("oversample", 0.8), ("gan+augment", 0.85), ("gan", 0.9)):
        for seed in (0, 1):
            for subset in ("test", "balanced_test", "val"):
                pred = np.where(rng.random(len(y)) < skill, y, rng.integers(0, 3, len(y)))
                rows.append(pd.DataFrame(dict(strategy=strategy, seed=seed, subset=subset, row=np.arange(len(y)),
                                              y_true=y, y_pred=pred)))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def report_inputs():
    rng = np.random.default_rng(0)
    x, y = tiny_arrays((12, 8, 6))
    train = ImageTable(x, y, NAMES)
    xs, ys = tiny_arrays((0, 4, 6), seed=5)
    synthetic = ImageTable(xs, ys, NAMES)
    xt, yt = tiny_arrays((10, 10, 10), seed=1)
    test = ImageTable(xt, yt, NAMES)
    predictions = _predictions(rng, yt)
    metrics = {
        "classifier": "small_cnn", "epochs": 2, "seeds": [0, 1], "class_names": list(NAMES),
        "train_counts": [12, 8, 6], "test_counts": [10, 10, 10], "plan": {"a": 0, "b": 4, "c": 6},
        "strategy_descriptions": {n: S.STRATEGIES[n].description for n in ("none", "oversample", "gan", "gan+augment")},
        **Rec.metrics_from_predictions(predictions, NAMES),
        "skipped": {"smote": "a test reason"}, "notes": ["Confidence intervals: a note."],
        "data": {"train": {"rows": 26, "sha256": "ab" * 32}},
        "timing_s": {"none": 1.0},
    }
    model = build_classifier("small_cnn", (1, 8, 8), 3, torch.Generator().manual_seed(0)).eval()
    metrics["gan_quality"] = Q.gan_quality(train, test, synthetic, model, seed=0)
    return dict(metrics=metrics, predictions=predictions, train=train, synthetic=synthetic)


def test_report_html_is_self_contained_and_states_the_verdict(report_inputs, tmp_path):
    gan_dir = tmp_path / "gan"
    gan_dir.mkdir()
    pd.DataFrame({"step": [1, 2, 3], "d_loss": [1.0, 0.9, 0.8], "g_loss": [0.7, 0.8, 0.9]}).to_csv(gan_dir / "losses.csv", index=False)
    out = tmp_path / "reports"
    paths = R.write_report(out, report_inputs["metrics"], report_inputs["predictions"], train=report_inputs["train"],
                           synthetic=report_inputs["synthetic"], gan_dir=gan_dir,
                           params={"evaluate": {"seeds": 2}, "data": {"source": "digits"}})
    assert all(p.is_file() for p in paths)
    page = (out / "report.html").read_text()
    # no external reference of any kind: nothing to fetch when the file is opened offline
    assert not re.search(r"""(src|href)\s*=\s*["']?(?!data:)[a-z]+:""", page, re.I)
    assert "http://" not in page and "https://" not in page and "@import" not in page and "url(" not in page
    imgs = re.findall(r"<img [^>]*src='([^']*)'", page)
    # recall, confusion, losses, real-vs-synthetic grid, nearest pairs
    assert len(imgs) == 5 and all(src.startswith("data:image/png;base64,") for src in imgs)
    assert "losses from losses.csv" in page
    verdict = RS.verdict(report_inputs["metrics"])
    first_p = re.search(r"<p[^>]*>(.*?)</p>", page, re.S).group(1)
    assert first_p.startswith(("Gain:", "No gain")) and first_p == verdict.replace("'", "&#x27;")
    assert "Skipped smote: a test reason." in page and "source: digits" in page


def test_report_markdown_pngs_and_csvs(report_inputs, tmp_path):
    R.write_report(tmp_path, report_inputs["metrics"], report_inputs["predictions"], train=report_inputs["train"],
                   synthetic=report_inputs["synthetic"], gan_dir=None, params={})
    md = (tmp_path / "report.md").read_text()
    assert md.splitlines()[2] == RS.verdict(report_inputs["metrics"])
    for png in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "No loss curves: no GAN folder was given." in md
    metrics = report_inputs["metrics"]
    for subset, summaries in (("test", metrics["strategies"]), ("balanced_test", metrics["balanced_test"]["strategies"])):
        strategies = pd.read_csv(tmp_path / "figures" / f"strategies_{subset}.csv")  # one file per subset
        assert strategies["strategy"].tolist() == list(summaries)
        row = strategies[strategies["strategy"] == "gan"]
        assert row["balanced_accuracy"].item() == pytest.approx(summaries["gan"]["balanced_accuracy"]["mean"])
    recall = pd.read_csv(tmp_path / "figures" / "per_class_recall.csv")  # long: one row per class and strategy
    names = list(metrics["strategies"])
    assert list(recall.columns) == ["class", "train_count", "strategy", "recall"] and len(recall) == 3 * len(names)
    assert recall["class"].tolist() == [c for c in "abc" for _ in names] and recall["strategy"].tolist() == names * 3
    assert recall["train_count"].tolist()[::len(names)] == [12, 8, 6]
    gan = recall[recall["strategy"] == "gan"]["recall"].tolist()
    assert gan == pytest.approx(metrics["strategies"]["gan"]["per_class_recall"]["mean"])
    confusion = pd.read_csv(tmp_path / "figures" / "confusion_gan_augment.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == 30


def test_report_without_synthetic_data_or_losses(report_inputs, tmp_path):
    m = dict(report_inputs["metrics"], gan_quality=None, skipped={"gan_quality": "no synthetic data to score"})
    R.write_report(tmp_path, m, report_inputs["predictions"], train=report_inputs["train"], synthetic=None,
                   gan_dir=tmp_path / "missing", params={})
    md = (tmp_path / "report.md").read_text()
    assert "Not measured: no synthetic data to score." in md
    assert "No synthetic images to show." in md
    assert f"No loss curves: {tmp_path / 'missing' / 'losses.csv'} not found." in md


def test_markdown_and_html_escape_cells():
    blocks = [RD.Block("h1", "t"), RD.Block("table", rows=[["a|b", "<x>"], ["1", "2"]])]
    assert "a\\|b" in RD.render_markdown(blocks)
    assert "&lt;x&gt;" in RD.render_html(blocks, "t")


def test_recommendation_closes_the_report_with_the_rule_and_every_validation_score():
    rec = {"strategy": "logit_adjust", "uses_synthetic": False, "baseline": "logit_adjust", "best_gan": "gan_la",
           "rule": Rec.RECOMMEND_RULE, "validation_balanced_accuracy": {"none": 0.9, "logit_adjust": 0.95, "gan_la": 0.96},
           "evidence": {"mean": 0.01, "p5": -0.02, "p95": 0.04, "share_positive": 0.7},
           "reason": "the best GAN strategy on validation, gan_la, leads by +1.00 points, within the validation noise"}
    metrics = {"recommendation": rec, "strategies": {"logit_adjust": {"balanced_accuracy": M.mean_ci([0.96, 0.97])}}}
    line = RS.recommendation_line(metrics)
    assert line.startswith("Recommended: logit_adjust (no GAN images; test balanced accuracy 96.5 [")
    blocks = RS.recommendation_blocks(metrics)
    assert blocks[0].text == "Recommendation" and "the test set plays no part" in blocks[2].text
    assert "+1.0 points, bootstrap 5th-95th percentile -2.0 to +4.0; ahead in 70%" in blocks[3].text
    assert "lead counts" not in blocks[3].text  # a metrics.json from before needed_lead
    rec["evidence"]["needed_lead"] = 0.03
    assert "At this noise a lead counts from about +3.0 points" in RS.recommendation_blocks(metrics)[3].text
    del rec["evidence"]["needed_lead"]
    assert blocks[-1].rows[1:] == [["gan_la", "96.0", "best GAN"], ["logit_adjust", "95.0", "recommended"],
                                   ["none", "90.0", ""]]
    # strategies validation cannot put below the baseline are named, and marked in the table
    rec["within_noise"] = {"none": {"mean": -0.05, "p5": -0.2, "p95": 0.01, "share_positive": 0.06}}
    blocks = RS.recommendation_blocks(metrics)
    assert any(b.text and b.text.startswith("Validation cannot put none below logit_adjust") for b in blocks)
    assert blocks[-1].rows[-1] == ["none", "90.0", "within the validation noise"]
    assert RS.recommendation_line({"recommendation": {"strategy": None, "reason": "no validation predictions"}}) \
        == "No recommendation: no validation predictions."


def test_dvc_draws_one_series_per_strategy_and_shows_a_narrow_summary(report_inputs, tmp_path):
    """The project's dvc.yaml plots and metrics on a written report: `dvc plots show --json` (offline)
    parses them with one series per strategy; `dvc metrics show` shows summary.json only, < 120 columns."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from conftest import REPO

    repo = tmp_path / "repo"
    (repo / ".dvc" / "plots").mkdir(parents=True)
    for rel in ("dvc.yaml", "params.yaml", ".dvc/plots/by_strategy.json"):
        shutil.copy(REPO / rel, repo / rel)
    (repo / ".dvc" / "config").write_text("")
    R.write_report(repo / "data" / "reports", report_inputs["metrics"], report_inputs["predictions"],
                   train=report_inputs["train"], synthetic=None, gan_dir=None, params={})
    dvc = [str(Path(sys.executable).parent / "dvc")]
    env = dict(os.environ, DVC_NO_ANALYTICS="1", COLUMNS="200")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)

    def run(*args: str) -> str:
        proc = subprocess.run([*dvc, *args], cwd=repo, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    plots = json.loads(run("plots", "show", "--json"))["data"]
    recall = plots["data/reports/figures/per_class_recall.csv"][0]
    assert recall["content"]["encoding"]["color"]["field"] == "strategy"
    values = recall["content"]["data"]["values"]
    assert {v["strategy"] for v in values} == set(report_inputs["metrics"]["strategies"])
    assert {v["class"] for v in values} == {"a", "b", "c"}
    assert {"data/reports/figures/strategies_test.csv", "data/reports/figures/strategies_balanced_test.csv"} <= set(plots)
    shown = run("metrics", "show")
    assert "summary.json" in shown and "metrics.json" not in shown
    assert max(len(line) for line in shown.splitlines()) < 120, shown
    summary = json.loads((repo / "data" / "reports" / "summary.json").read_text())
    metrics = report_inputs["metrics"]
    use = metrics["recommendation"]["strategy"]
    # a fixed set of columns, however many strategies ran (16 by default)
    assert set(summary) == {"verdict", "gain", "gain_lo", "gain_hi", "use", "use_ba", "gan", "gan_ba"}
    assert summary["use"] == use
    assert summary["use_ba"] == round(100 * metrics["strategies"][use]["balanced_accuracy"]["mean"], 2)
    assert summary["gan"] == metrics["gain"]["strategy"]


def test_gain_by_class_size_by_hand():
    recall = lambda *r: {"per_class_recall": {"mean": list(r)}}  # noqa: E731
    metrics = {"class_names": ["a", "b", "c", "d", "e"], "train_counts": [300, 40, 5, 2, 8],
               "strategies": {"g": recall(0.9, 0.8, 0.2, 0.5, None), "r": recall(0.8, 0.8, 0.6, 0.4, None)}}
    # differences +0.1, 0, -0.4, +0.1 over the 4 classes with test images (e has none): balanced accuracy -0.05
    groups = RS.gain_by_class_size(metrics, "g", "r")
    assert [(g["group"], g["classes"]) for g in groups] == [("1-10", 2), ("11-50", 1), ("over 200", 1)]  # 51-200 empty
    assert [g["points"] for g in groups] == pytest.approx([(-0.4 + 0.1) / 4, 0.0, 0.1 / 4])
    assert sum(g["points"] for g in groups) == pytest.approx(-0.05)
    assert groups[0]["worst"] == ("c", pytest.approx(-0.4)) and groups[0]["best"] == ("d", pytest.approx(0.1))
    # the report section compares the recommendation's best GAN and best non-GAN strategies, and only those
    assert RS.class_size_blocks(metrics) == []
    blocks = RS.class_size_blocks({**metrics, "recommendation": {"best_gan": "g", "baseline": "r"}})
    assert "(-5.0 points)" in blocks[1].text
    assert blocks[2].rows[1] == ["1-10", "2", "-7.5", "c (-40.0)", "d (+10.0)"]
    assert blocks[2].rows[2][3:] == ["none", "none"]  # b neither lost nor gained
