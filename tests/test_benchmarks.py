"""Each benchmark script runs on tiny data in seconds, so they cannot rot."""

import json
import math
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, make_npz_folder

pytestmark = pytest.mark.slow

TINY = ["--set", "train_gan.steps=4", "--set", "train_gan.batch_size=8", "--set", "train_gan.checkpoint_every=2",
        "--set", "train_gan.sample_every=2", "--set", "evaluate.epochs=1", "--set", "evaluate.gan_quality=false",
        "--set", "evaluate.strategies=[none,class_weight,gan,gan_policy]",
        "--set", "evaluate.mix.cap_ratio=[1]", "--set", "evaluate.mix.min_score=[0.0]",
        "--set", "evaluate.mix.synthetic_weight=[1.0]", "--set", "data.val_fraction=0.3"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """One tiny npz folder and one run of outcome.py and speed.py, shared by the tests below."""
    tmp_path = tmp_path_factory.mktemp("bench")
    folder = make_npz_folder(tmp_path / "npz")
    return tmp_path, run_outcome(tmp_path, folder), run_speed(tmp_path, folder)


def run_outcome(tmp_path, npz_folder, out=None, *extra):
    out = out or tmp_path / "results" / "tiny.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/outcome.py"), "--data", str(npz_folder), "--long-tail", "natural=0.8",
         "--out", str(out), "--seeds", "2", "--workdir", str(tmp_path / "work"), *TINY, *extra],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_outcome_on_tiny_npz(bench):
    result = json.loads(bench[1].read_text())
    for key in ("command", "machine", "dataset", "profile", "wall_s", "peak_rss_mb", "strategies", "gain"):
        assert key in result
    assert result["dataset"] == "npz" and result["profile"] == "natural=0.8"
    assert set(result["strategies"]) == {"none", "class_weight", "gan", "gan_policy"}
    assert len(result["strategies"]["none"]["balanced_accuracy"]["per_seed"]) == 2
    assert result["machine"]["cpu_capability"]
    assert result["reused_gan"] is False and "train-gan" in result["stage_s"]
    # the GAN settings it trained with: the auto recipe resolved, --set values kept
    gan = result["params"]["train_gan"]
    assert gan["recipe"] != "auto" and gan["width"] is not None and gan["steps"] == 4


def test_outcome_reusing_the_gan_says_so(bench):
    tmp_path = bench[0]
    out = run_outcome(tmp_path, tmp_path / "npz", tmp_path / "reused" / "tiny.json", "--reuse-gan", "--seeds", "1")
    result = json.loads(out.read_text())
    assert result["reused_gan"] is True and "train-gan" not in result["stage_s"]
    assert len(result["strategies"]["none"]["balanced_accuracy"]["per_seed"]) == 1


def test_outcome_rerun_in_the_same_workdir_says_its_gan_was_not_trained_again(bench):
    """Without --reuse-gan, train-gan resumes from the workdir; a GAN already finished there is not
    trained again, so the result must not present the run as the whole benchmark."""
    tmp_path = bench[0]
    out = run_outcome(tmp_path, tmp_path / "npz", tmp_path / "again" / "tiny.json", "--seeds", "1")
    result = json.loads(out.read_text())
    assert "train-gan" in result["stage_s"] and result["reused_gan"] is True


def run_speed(tmp_path, npz_folder):
    out = tmp_path / "results" / "speed.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/speed.py"), "--data", str(npz_folder), "--parts", "gan_train,generate,flops",
         "--seconds", "1", "--images", "40", "--rounds", "2", "--workdir", str(tmp_path / "speed"), "--out", str(out),
         "--set", "train_gan.width=8", "--set", "train_gan.aux_weight=0.5"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_speed_on_tiny_npz(bench):
    """Every key issue #8 names (the `demo` part runs `augment run` itself: covered by the CLI tests)."""
    r = json.loads(bench[2].read_text())
    g = r["gan_train"]
    for key in ("augment_img_per_s", "reference_img_per_s", "augment_class_consistency", "reference_class_consistency"):
        assert g[key] >= 0
    assert g["runs"]["augment"]["recipe"]["aux_weight"] == 0.5 and g["runs"]["augment"]["recipe"]["width"] == 8
    assert g["runs"]["reference"]["arch"] == "concat"
    assert set(g["runs"]["augment"]["class_consistency"]["per_class"]) == {"zero", "one", "two"}
    assert set(g["judge_on_real_test"]["per_class"]) == {"zero", "one", "two"}
    for shape in ("28x28x1", "32x32x3", "28x28x1 (concat generator)"):
        s = r["generate"]["by_shape"][shape]
        assert s["images"] == 40 and s["rounds"] == 2 and s["shards_img_per_s"] > 0 and s["per_file_img_per_s"] > 0
        assert 0 < s["per_file_save_image_share"] < 1
    assert 0 < r["flops"]["fraction_of_fp32_peak"] and r["machine"]["cores"] >= 1


def test_speed_resume_reads_finished_parts_of_the_same_arguments_only(bench):
    """--resume reads a part an interrupted run finished with the same arguments, and measures a
    part again when an argument differs; gan_rescore is not a part of a plain run."""
    tmp_path, first = bench[0], json.loads(bench[2].read_text())
    out = tmp_path / "resumed" / "speed.json"

    def speed(*extra, images="40"):
        return subprocess.run(
            [sys.executable, str(REPO / "benchmarks/speed.py"), "--data", str(tmp_path / "npz"), "--resume",
             "--seconds", "1", "--images", images, "--rounds", "2", "--workdir", str(tmp_path / "speed"), "--out", str(out),
             "--set", "train_gan.width=8", "--set", "train_gan.aux_weight=0.5", *extra],
            capture_output=True, text=True, cwd=tmp_path)

    proc = speed("--parts", "generate,flops")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["resumed_parts"] == ["generate", "flops"]
    assert r["generate"] == first["generate"] and r["flops"] == first["flops"]  # read, not measured again
    proc = speed("--parts", "generate", images="50")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert "resumed_parts" not in r and r["generate"]["by_shape"]["28x28x1"]["images"] == 50
    proc = speed("--parts", "generate,flops", "--rounds", "1")  # flops does not read --rounds: resumed
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["resumed_parts"] == ["flops"] and r["generate"]["by_shape"]["28x28x1"]["rounds"] == 1
    proc = speed("--parts", "gan_rescore")
    assert proc.returncode != 0 and "unknown part 'gan_rescore'" in proc.stderr


def test_precision_benchmark_measures_both_precisions(bench):
    """precision.py: fp32 and bf16 figures for the GAN step, both generator shapes and the classifier,
    what auto resolves to here, the pixel change of a trained GAN, and its BENCHMARKS.md section."""
    import torch

    from pipeline.device import choose_precision

    tmp_path = bench[0] / "precision"
    out = tmp_path / "results" / "precision.json"
    tmp_path.mkdir()
    gan = bench[0] / "speed" / "augment" / "final.pt"  # trained by the speed.py run of the fixture
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/precision.py"), "--seconds", "0.05", "--rounds", "2", "--warmup", "1", "--out", str(out),
                           "--gan", str(gan)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["auto"] == ("bf16" if choose_precision("auto", torch.device("cpu")) is not None else "fp32")
    assert r["rounds"] == 2 and r["warmup"] == 1
    figures = [r["gan_step_per_s"], r["classifier_img_per_s"], *r["generator_img_per_s"].values()]
    assert len(figures) == 4 and all(f["fp32"] > 0 and f["bf16"] > 0 for f in figures)
    assert set(r["generator_img_per_s"]) == {"28x28x1", "32x32x3"} and "bf16_features" in r["machine"]
    change = r["pixel_change"][str(gan)]
    assert change["images"] == 3 * 300 and 0 <= change["fraction_moved_more_than_one"] <= change["fraction_moved"] <= 1
    assert 0 <= change["mean_levels"] <= change["max_levels"] <= 255
    md = tmp_path / "P.md"
    subprocess.run([sys.executable, str(REPO / "benchmarks/render.py"), "--results", str(out.parent), "--out", str(md)],
                   check=True, capture_output=True, cwd=tmp_path)
    assert "## precision" in md.read_text() and "bf16 / fp32" in md.read_text() and "pixels moved" in md.read_text()


def test_render_writes_every_section(bench):
    tmp_path = bench[0]
    md = tmp_path / "B.md"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/render.py"), "--results", str(tmp_path / "results"),
                           "--out", str(md)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = md.read_text()
    assert "## speed" in text and "## tiny" in text and "Per-class agreement" in text
    assert "![tiny](results/tiny.png)" in text and (tmp_path / "results" / "tiny.png").stat().st_size > 0
    assert "Verdict" in text and "val. balanced NLL" in text
    assert "Judge: small CNN" in text
    assert "## What was tried for the goals" in text and "**Shards vs per-file**" in text


def test_what_was_tried_quotes_the_result_files(bench, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from render import tried_section

    results = bench[0] / "results"
    tiny, speed = (json.loads((results / f"{n}.json").read_text()) for n in ("tiny", "speed"))
    text = "\n".join(tried_section({"mnist_lt": tiny, "gtsrb_lt": tiny, "speed": speed}))
    gan = 100 * tiny["strategies"]["gan"]["balanced_accuracy"]["mean"]
    assert f"`gan` alone {gan:.2f}%" in text and "**GTSRB-LT gain** (`gtsrb_lt.json`)" in text
    assert f"{tiny['params']['train_gan']['steps']} steps" in text and tiny["mix_policy"]["chosen"]["name"] in text
    assert f"{speed['gan_train']['augment_img_per_s']} img/s" in text
    assert tried_section({}) == []
    # a run without gan_policy: the validation-best GAN strategy stands in for the policy
    plain = {k: v for k, v in tiny.items() if k != "mix_policy"}
    line = "\n".join(tried_section({"mnist_lt_diverse_gan": plain}))
    assert "(`mnist_lt_diverse_gan.json`)" in line and "validation-best GAN strategy" in line
    assert "policy `" not in line
    # the GAN line names mode seeking and classifier guidance (with its cap) where the run used them
    plain = json.loads(json.dumps(plain))
    plain["params"]["train_gan"] |= {"ms_weight": 0.0, "guide_weight": 0.0}
    line = "\n".join(tried_section({"gtsrb_guide": plain}))
    assert "(`gtsrb_guide.json`)" in line and ", mode seeking" not in line and ", classifier guidance" not in line
    plain["params"]["train_gan"] |= {"ms_weight": 0.3, "guide_weight": 1.0, "guide_until": 0.5}
    line = "\n".join(tried_section({"gtsrb_guide": plain}))
    assert ", mode seeking 0.3, classifier guidance 1.0 until p >= 0.5" in line
    plain["params"]["train_gan"] |= {"guide_until": 1.0}
    assert ", classifier guidance 1.0;" in "\n".join(tried_section({"gtsrb_guide": plain})).replace("1.0.", "1.0;")
    # a hand-written note ends the run's line
    line = "\n".join(tried_section({"gtsrb_guide": {**plain, "note": "the other strategy scored 97.67%."}}))
    assert line.rstrip().endswith("). the other strategy scored 97.67%.")


def test_speed_rescore_keeps_images_per_s_and_the_earlier_figures(bench):
    """--rescore re-judges the earlier run's two GANs; images/s untouched, old consistency kept."""
    tmp_path, before = bench[0], json.loads(bench[2].read_text())
    out = tmp_path / "rescored" / "speed.json"
    out.parent.mkdir()
    out.write_text(json.dumps(before))

    def rescore():
        return subprocess.run([sys.executable, str(REPO / "benchmarks/speed.py"), "--rescore", "--data", str(tmp_path / "npz"),
                               "--workdir", str(tmp_path / "speed"), "--out", str(out)],
                              capture_output=True, text=True, cwd=tmp_path)

    proc = rescore()
    assert proc.returncode == 0, proc.stderr[-3000:]
    g, g0 = json.loads(out.read_text())["gan_train"], before["gan_train"]
    assert g["augment_img_per_s"] == g0["augment_img_per_s"] and g["reference_img_per_s"] == g0["reference_img_per_s"]
    assert g["rescored"]["previous"]["augment"] == g0["runs"]["augment"]["class_consistency"]
    assert g["augment_class_consistency"] == g["runs"]["augment"]["class_consistency"]["overall"]
    assert g["judge_on_real_test"]["recipe"]["epochs"] >= 1
    md = tmp_path / "R.md"
    subprocess.run([sys.executable, str(REPO / "benchmarks/render.py"), "--results", str(out.parent), "--out", str(md)],
                   check=True, capture_output=True, cwd=tmp_path)
    assert "Re-judged on" in md.read_text() and "earlier judge on real test images" in md.read_text()

    # the GAN of another run is refused, not scored under this file's figures
    before["gan_train"]["runs"]["augment"]["steps"] += 1
    out.write_text(json.dumps(before))
    proc = rescore()
    assert proc.returncode != 0 and "not the run that file describes" in proc.stderr


def test_tree_memory_counts_worker_processes_side_by_side(monkeypatch):
    """A child holding ~200 MiB is in the peak, which ru_maxrss of this process alone would miss."""
    import os
    import time

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from machine import TreeMemory, tree_rss_bytes

    hold = "import numpy, time; a = numpy.ones(200 * 2**20 // 8); print('ready', flush=True); time.sleep(30)"
    before = tree_rss_bytes(os.getpid()) / 2**20
    with TreeMemory(interval=0.05) as memory:
        child = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            time.sleep(0.3)
        finally:
            child.kill()
            child.wait()
    assert memory.peak_mb >= before + 180


def test_goals_table_says_met_or_by_how_much_missed(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from render import goals_section

    gain = {"strategy": "gan_policy", "baseline": "oversample",
            "balanced_accuracy": {"mean": 0.004, "ci95": [0.001, 0.007], "per_seed": [0.003, 0.004, 0.005]}}
    strong = {name: {"balanced_accuracy": {"mean": 0.96}} for name in ("logit_adjust", "drw", "mixup_drw")}
    mnist = {"gain": gain, "strategies": {"gan_policy": {"balanced_accuracy": {"mean": 0.9712}}, **strong},
             "wall_s": 2040.0, "seeds": [0, 1, 2, 3, 4], "reused_gan": False}
    speed = {"gan_train": {"augment_img_per_s": 900.0, "reference_img_per_s": 300.0,
                           "augment_class_consistency": 0.99, "reference_class_consistency": 0.77},
             "generate": {"shards_img_per_s": 6000.0, "per_file_img_per_s": 1000.0}, "demo_seconds": 301.0}
    rows = [line for line in goals_section({"mnist_lt": mnist, "speed": speed}) if line.startswith("| ")][1:]
    status = {row.split(" | ")[0].lstrip("| "): row.split(" | ")[2] for row in rows}
    assert status["MNIST-LT: validation-best GAN strategy >= best non-GAN + 1.0 pt, CI above 0"] == "missed by 0.6 points"
    assert status["MNIST-LT: GAN strategy balanced accuracy >= 97.5%"] == "missed by 0.38 points"
    assert status["MNIST-LT: whole benchmark <= 30 min on 2 CPU cores"] == "missed by 4.0 min"
    measured = {row.split(" | ")[0].lstrip("| "): row.split(" | ")[1] for row in rows}
    assert measured["MNIST-LT: whole benchmark <= 30 min on 2 CPU cores"] == "34.0 min (5 seeds)"
    amd = {**mnist, "machine": {"cpu": "AMD EPYC", "cpu_capability": "AVX2", "bf16_faster": False}}
    timed = [line for line in goals_section({"mnist_lt": amd}) if "whole benchmark" in line][0]
    assert "| 34.0 min (5 seeds; AMD EPYC, AVX2, fp32) | missed by 4.0 min |" in timed
    assert status["GTSRB-LT: gain >= +2 pt"] == "not measured"
    usps = {"gain": {**gain, "balanced_accuracy": {"mean": 0.01, "ci95": [-0.004, 0.024], "per_seed": [0.0, 0.01, 0.02]}},
            "strategies": strong, "seeds": [0, 1, 2, 3, 4]}
    usps_row = [r for r in goals_section({"usps_lt": usps}) if r.startswith("| USPS-LT")][0]
    assert "| missed by 0.4 points |" in usps_row  # the mean is above 0, the CI's low end 0.4 pt below it
    # a run without the strong baselines does not settle a gain goal, met or missed
    five = [0, 1, 2, 3, 4]
    gtsrb = {"gain": gain, "strategies": {"oversample": {}, "logit_adjust": {}, "gan_policy": {}}, "seeds": five}
    rows = [r for r in goals_section({"gtsrb": gtsrb, "gtsrb_lt": {"gain": usps["gain"], "seeds": five}})
            if r.startswith("| GTSRB")]
    assert "| not settled; the run has no drw, mixup_drw baseline |" in rows[0]
    assert "| missed by 1.0 points; the run has no logit_adjust, drw, mixup_drw baseline |" in rows[1]
    # the newer GTSRB run is the one the row reads; too few seeds do not settle it either
    rows = [r for r in goals_section({"gtsrb": gtsrb, "gtsrb_strong": {**mnist, "seeds": [0, 1, 2]}}) if r.startswith("| GTSRB natural")]
    assert "gtsrb_strong.json" in rows[0] and "| not settled; 3 seeds of the 5 the goal asks |" in rows[0]
    usps_row = [r for r in goals_section({"usps_lt": usps, "usps_lt_diverse_gan": mnist})
                if r.startswith("| USPS-LT")][0]
    assert "usps_lt_diverse_gan.json" in usps_row and "| met |" in usps_row
    # a hand-written goal_note joins the status
    noted = {**mnist, "goal_note": "paired with the former GAN +0.07"}
    usps_row = [r for r in goals_section({"usps_lt_diverse_gan": noted}) if r.startswith("| USPS-LT")][0]
    assert "| met; paired with the former GAN +0.07 |" in usps_row
    assert status["GAN training >= 3x the reference's images/s at equal or better class consistency"] == "met"
    assert status["Shards >= 10x a per-file loop and >= 5,000 images/s at 28x28"] == "missed"  # 6x
    assert status["`make demo` <= 300 s after install"] == "missed"
    # the mode-collapse signal at the end of every run that trained its GAN (a reused GAN counts once)
    collapse = "No mode-collapse warning at the end of the benchmark runs (every class's sample spread >= 50% of its real images)"
    signal = {"step": 10, "ratio": {"a": 0.9, "b": 0.42}, "collapse_ratio": 0.5, "collapsed": ["b"]}
    runs = {"one": {"gan_diversity_at_end": {**signal, "collapsed": []}, "reused_gan": False},
            "two": {"gan_diversity_at_end": signal, "reused_gan": False},
            "two_reused": {"gan_diversity_at_end": signal, "reused_gan": True}}
    rows = [r for r in goals_section(runs) if r.startswith(f"| {collapse}")]
    assert rows == [f"| {collapse} | 1 of 2 runs without | missed: two class b (0.42) | one.json, two.json |"]
    # many collapsed classes: their count and the three lowest
    many = {"step": 10, "ratio": {c: r for c, r in zip("abcde", (0.9, 0.3, 0.1, 0.4, 0.2))}, "collapse_ratio": 0.5,
            "collapsed": ["b", "c", "d", "e"]}
    rows = [r for r in goals_section({"two": {"gan_diversity_at_end": many, "reused_gan": False}})
            if r.startswith(f"| {collapse}")]
    assert "missed: two 4 of 5 classes, lowest c (0.10), e (0.20), b (0.30) |" in rows[0]
    # the shipped recipe's run, when present, is the one the MNIST-LT goals read; a resumed run adds
    # the time of the run it resumed
    newer = {**mnist, "gain": {**gain, "balanced_accuracy": {"mean": 0.012, "ci95": [0.002, 0.02], "per_seed": [0.01] * 5}},
             "wall_s": 1500.0, "wall_s_earlier": 600.0}
    rows = [line for line in goals_section({"mnist_lt": mnist, "mnist_lt_diverse_gan": newer}) if line.startswith("| MNIST")]
    assert all("mnist_lt_diverse_gan.json" in row for row in rows)
    assert "| met |" in rows[0] and "35.0 min (5 seeds, incl. 10.0 min of an earlier run it resumed)" in rows[2]
    assert "missed by 5.0 min" in rows[2]
    # a run that reused its GAN is not the whole benchmark: the time goal reads the first goal run
    # that trained one, the others the first goal run present
    shared = {**newer, "reused_gan": True, "wall_s": 600.0}
    rows = [line for line in goals_section({"mnist_lt": mnist, "mnist_lt_diverse_gan": newer, "mnist_lt_share": shared})
            if line.startswith("| MNIST")]
    assert "mnist_lt_share.json" in rows[0] and "mnist_lt_diverse_gan.json" in rows[2] and "35.0 min" in rows[2]
    mnist["reused_gan"] = True
    rows = [line for line in goals_section({"mnist_lt": mnist}) if "30 min" in line]
    assert "not measured" in rows[0]
    del speed["demo_seconds"]  # speed.py --skip-demo: the other speed goals still show, the demo row is left out
    rows = [line for line in goals_section({"speed": speed}) if line.startswith("| ")][1:]
    assert len(rows) == 6 and not any("make demo" in row for row in rows) and any("Shards" in row for row in rows)


def test_every_figure_names_the_code_that_made_it(bench, monkeypatch):
    """machine_info and each speed.py part record augment's version and commit; render shows them,
    and files from before the version was recorded say 0.1.0."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from render import _machine

    from pipeline import __version__

    r = json.loads(bench[2].read_text())
    assert r["machine"]["augment"] == __version__
    for part in ("gan_train", "generate", "flops"):
        commit = r[part]["code"]["commit"]  # None where git is missing or refuses the checkout
        assert r[part]["code"]["augment"] == __version__
        assert commit is None or re.fullmatch(r"[0-9a-f]{4,40}(-dirty)?", commit)
    assert f"augment {__version__}" in _machine(r["machine"])
    old = {k: v for k, v in r["machine"].items() if k not in ("augment", "commit")}
    assert _machine(old).endswith("augment 0.1.0 (recorded before versions were)")


def test_selection_check_and_its_goal_rows(monkeypatch):
    """The recommendation read on the test set: regret, and inside/above the best non-GAN's CI."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from outcome import selection_check
    from render import goals_section

    ba = lambda mean, lo: {"balanced_accuracy": {"mean": mean, "ci95": [lo, mean + 0.01]}}  # noqa: E731
    metrics = {"recommendation": {"strategy": "logit_adjust"},
               "strategies": {"none": ba(0.90, 0.88), "logit_adjust": ba(0.95, 0.94), "drw": ba(0.955, 0.945),
                              "gan_la": ba(0.96, 0.95), "synthetic_only": ba(0.99, 0.98)}}
    check = selection_check(metrics)
    assert check["best_on_test"] == "gan_la" and check["regret"] == pytest.approx(0.01)  # synthetic_only left out
    assert check["best_non_gan_on_test"] == "drw" and check["not_below_best_non_gan_ci"] is True  # 0.95 >= 0.945
    # with the predictions: each strategy's class-balanced validation NLL, and the regret of the
    # non-GAN strategy with the lowest one. Two validation images (classes 0 and 1), p_true by seed:
    # none  -log(0.5) both -> 0.693; logit_adjust -log(0.8) -> 0.223; drw -log(0.9) -> 0.105
    rows = [{"strategy": n, "seed": seed, "subset": "val", "row": r, "y_true": r, "y_pred": r, "p_true": p}
            for n, p in [("none", 0.5), ("logit_adjust", 0.8), ("drw", 0.9), ("gan_la", 0.95), ("synthetic_only", 0.99)]
            for seed in (0, 1) for r in (0, 1)]
    check = selection_check(metrics, pd.DataFrame(rows))
    assert check["validation_nll"]["drw"] == pytest.approx(-math.log(0.9))
    assert check["validation_nll"]["none"] == pytest.approx(-math.log(0.5)) and "synthetic_only" not in check["validation_nll"]
    assert check["nll_pick"] == "drw" and check["nll_pick_regret"] == pytest.approx(0.005)  # gan_la 0.96 - drw 0.955
    metrics["recommendation"]["strategy"] = "none"
    assert selection_check(metrics)["not_below_best_non_gan_ci"] is False
    assert selection_check({"recommendation": {"strategy": None}, "strategies": {}}) is None
    runs = {"a": {"selection": {"regret": 0.001, "not_below_best_non_gan_ci": True}},
            "b": {"selection": {"regret": 0.009, "not_below_best_non_gan_ci": False}},
            "c": {"selection": {"regret": 0.002, "not_below_best_non_gan_ci": True}}}
    rows = {row.split(" | ")[0].lstrip("| "): row.split(" | ")[1:3] for row in goals_section(runs) if row.startswith("| ")}
    assert rows["Recommendation never below the best non-GAN strategy's test CI"] == ["2 of 3 runs", "missed on b"]
    assert rows["Median selection regret <= 0.3 pt"] == ["0.20 pt over 3 run(s)", "met"]


def test_scarcity_counts_and_section(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from render import scarcity_section
    from scarcity import summarize, tail_counts

    # 800 * (800/5)^(-i/9): 800, 453, 256, ... down to exactly 5
    counts = tail_counts(800, 5, 10)
    assert counts[0] == 800 and counts[1] == int(800 * 160 ** (-1 / 9)) and counts[-1] == 5
    assert counts == sorted(counts, reverse=True)
    r = {"gain": {"strategy": "gan_drw", "baseline": "drw", "verdict": "no gain",
                  "balanced_accuracy": {"mean": 0.01, "ci95": [-0.005, 0.025]}},
         "strategies": {"gan_drw": {"balanced_accuracy": {"mean": 0.91}}, "drw": {"balanced_accuracy": {"mean": 0.90}}},
         "recommendation": {"strategy": "drw"}, "wall_s": 60.0}
    summary = {"data": "mnist", "head": 800, "tails": summarize({5: r})}
    (tmp_path / "scarcity").mkdir()
    lines = scarcity_section(summary, tmp_path, tmp_path / "BENCHMARKS.md")
    assert "| 5 | gan_drw | 91.00 | drw | 90.00 | +1.00 [-0.50, +2.50] | drw |" in lines
    assert (tmp_path / "scarcity" / "scarcity.png").is_file()


def test_shared_cores_section_renders_each_case(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import render

    row = {"case": "auto", "neighbour": True, "threads": 1, "images_per_s": 120, "share_of_best_alone": 0.456,
           "cores_idle_before": 1.9}
    r = {"command": "python benchmarks/shared_cores.py", "machine": {"cpu": "x", "cores": 2}, "rows": [row]}
    monkeypatch.setattr(render, "_machine", lambda m: "a test machine")
    text = "\n".join(render.shared_cores_section(r))
    assert "## Shared cores" in text and "| auto | yes | 1 | 120 | 46% | 1.9 |" in text


def test_gan_ablation_summary_and_section(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gan_ablation
    import render
    import torch

    # (step, class, agreement, recall): at step 250 class 1 misses recall, at 500 both pass
    rows = torch.tensor([[250, 0, 0.99, 0.7], [250, 1, 1.0, 0.5], [500, 0, 0.985, 0.65], [500, 1, 0.99, 0.8]],
                        dtype=torch.float64)  # final.pt stores the rows in float64
    s = gan_ablation.summarize(rows, recall_bar=0.6)
    assert s["steps_to_bar"] == 500
    assert s["last"] == {"step": 500, "worst_agreement": 0.985, "mean_agreement": pytest.approx(0.9875),
                         "mean_recall": pytest.approx(0.725), "worst_recall": 0.65}
    assert gan_ablation.summarize(rows, recall_bar=0.9)["steps_to_bar"] is None
    r = {"command": "python benchmarks/gan_ablation.py", "machine": {}, "steps": 500, "recall_bar": 0.6,
         "variants": {"lecam": {"overrides": {"train_gan.lecam_weight": 0.3}, "s_per_step": 0.2, "best_step": 500, **s},
                      "ms": {"overrides": {"train_gan.ms_weight": 0.3}, "s_per_step": 0.25, "best_step": 250, **s,
                             "diversity_at_end": {"step": 500, "ratio": {"a": 0.9, "b": 0.456}, "collapse_ratio": 0.5,
                                                  "collapsed": ["b"]}}}}
    monkeypatch.setattr(render, "_machine", lambda m: "a test machine")
    text = "\n".join(render.gan_ablation_section("gan_ablation_x", r))
    assert "| lecam | lecam_weight=0.3 | 0.988 | 0.985 | 0.725 | 0.650 | 500 | 500 | - | 0.200 |" in text  # recorded before the signal
    assert "| ms | ms_weight=0.3 | 0.988 | 0.985 | 0.725 | 0.650 | 250 | 500 | 0.46 (class b) | 0.250 |" in text


def test_selection_rules_scored_on_hand_made_predictions(monkeypatch):
    """Each rule's pick on validation, scored on test: regret and inside the test-best's CI."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from selection import score_rules, summarize

    # two classes, one validation image each; `none` right on both (val 1.0) but unsure (p 0.55),
    # logit_adjust right on both and sure (p 0.9); on test logit_adjust is right on 4 of 4 images
    # and `none` on 3 of 4 (class 1: 1 of 2), both seeds alike
    rows = []
    for seed in (0, 1):
        for name, p, test_right in [("none", 0.55, [1, 1, 1, 0]), ("logit_adjust", 0.9, [1, 1, 1, 1])]:
            rows += [{"strategy": name, "seed": seed, "subset": "val", "row": r, "y_true": r, "y_pred": r, "p_true": p}
                     for r in (0, 1)]
            for r, (y, right) in enumerate(zip([0, 0, 1, 1], test_right)):
                rows.append({"strategy": name, "seed": seed, "subset": "test", "row": r, "y_true": y,
                             "y_pred": y if right else 1 - y, "p_true": 0.9 if right else 0.1})
    scored = score_rules(pd.DataFrame(rows), 2)
    assert scored["best_on_test"] == "logit_adjust" and scored["test"]["none"] == pytest.approx(0.75)
    # accuracy ties at 1.0 on validation and falls to the lower NLL; nll picks it directly
    assert scored["rules"]["balanced_accuracy"]["pick"] == "logit_adjust"
    assert scored["rules"]["nll"] == {"pick": "logit_adjust", "test": 1.0, "regret": 0.0, "inside_best_ci": True}
    cases = {"a": scored, "b": {"best_on_test": "drw", "rules": {
        "nll": {"pick": "none", "regret": 0.02, "inside_best_ci": False},
        "balanced_accuracy": {"pick": "drw", "regret": 0.0, "inside_best_ci": True}}}}
    s = summarize(cases)
    assert s["nll"] == {"cases": 2, "median_regret": pytest.approx(0.01), "mean_regret": pytest.approx(0.01),
                        "worst_regret": 0.02, "inside_best_ci": 1, "picked_best": 1}
    assert s["balanced_accuracy"]["picked_best"] == 2 and s["fixed_logit_adjust"]["cases"] == 1


def test_selection_benchmark_on_tiny_npz(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from render import selection_section

    folder = make_npz_folder(tmp_path / "npz")
    out = tmp_path / "sel"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/selection.py"), "--out", str(out), "--data", str(folder),
         "--long-tail", "natural=0.8", "--seeds", "2", "--workdir", str(tmp_path / "work"),
         "--set", "evaluate.epochs=1", "--set", "evaluate.strategies=[none,logit_adjust,drw]",
         "--set", "data.val_fraction=0.3"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    case = json.loads((out / "npz.json").read_text())
    assert set(case["test"]) == {"none", "logit_adjust", "drw"} and case["command"].startswith("python ")
    assert set(case["rules"]) == {"balanced_accuracy", "nll", "strongest_within_noise", "fixed_logit_adjust"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == ["npz"] and summary["rules"]["nll"]["cases"] == 1
    assert (tmp_path / "work" / "npz" / "predictions.parquet").is_file()
    lines = selection_section(out)
    rows = [row for row in lines if row.startswith("| nll (all cases) |") or row.startswith("| npz |")]
    assert len(rows) == 2 and f"{min(case['val_counts'])} |" in rows[1]


def test_time_to_quality_first_time_is_the_first_snapshot_past_both_bars(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from time_to_quality import curve_point, first_time

    curve = [curve_point(250, 30.0, [0.99, 0.97], [0.8, 0.9]),  # class 1 not recognisable yet
             curve_point(500, 55.5, [0.99, 0.98], [0.65, 0.9]),  # both pass 0.6, not 0.7
             curve_point(750, 80.0, [1.0, 0.99], [0.75, 0.71])]
    assert curve[1]["worst_agreement"] == 0.98 and curve[1]["mean_recall"] == pytest.approx(0.775)
    assert first_time(curve, 0.6) == 55.5 and first_time(curve, 0.7) == 80.0 and first_time(curve, 0.8) is None


def test_time_to_quality_child_gets_sigint_even_when_the_benchmark_ignores_it(monkeypatch):
    """Started as a background job (`cmd &`, nohup) the benchmark ignores SIGINT; its train-gan child
    must not inherit that, or the stop signal at the end of the budget does nothing."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from time_to_quality import default_sigint

    probe = [sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"]
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        inherited = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()
        reset = subprocess.run(probe, capture_output=True, text=True, check=True, preexec_fn=default_sigint).stdout.strip()
    finally:
        signal.signal(signal.SIGINT, old)
    assert (inherited, reset) == ("False", "True")


def test_time_to_quality_trains_a_recipe_again_when_what_it_resolves_to_changed(tmp_path, monkeypatch):
    """A finished run is reused only for the same overrides, budget and resolved train_gan settings:
    after the shipped recipe changes, "ours" (no overrides) must not reuse the old recipe's run."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import time_to_quality as ttq

    args = SimpleNamespace(minutes=10.0, reference_minutes=10.0)
    settings = {"width": 16, "aux_weight": 1.0, "ms_weight": 0.0}
    monkeypatch.setattr(ttq, "trained_settings", lambda args, work, name: dict(settings))
    (tmp_path / "ours").mkdir()
    record = {"overrides": {}, "train_gan": dict(settings), "budget_s": 600.0, "steps_reached": 250}
    (tmp_path / "ours" / "run.json").write_text(json.dumps(record))
    assert ttq.finished_run(args, tmp_path, "ours") == record
    settings["ms_weight"] = 0.3  # the recipe gained mode seeking
    assert ttq.finished_run(args, tmp_path, "ours") is None
    settings["ms_weight"] = 0.0
    assert ttq.finished_run(SimpleNamespace(minutes=12.0, reference_minutes=12.0), tmp_path, "ours") is None
    del record["train_gan"]  # a run recorded before the settings were
    (tmp_path / "ours" / "run.json").write_text(json.dumps(record))
    assert ttq.finished_run(args, tmp_path, "ours") is None


def test_time_to_quality_on_tiny_npz(tmp_path, monkeypatch):
    """Both recipes train in a child for their budget; every checkpoint becomes a scored point with
    its time since the child started, and the section and goal rows render from the file."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import render

    folder = make_npz_folder(tmp_path / "npz")
    out = tmp_path / "results" / "time_to_quality_mnist_lt.json"
    cmd = [sys.executable, str(REPO / "benchmarks/time_to_quality.py"), "--data", str(folder), "--long-tail", "natural=0.8",
           "--out", str(out), "--workdir", str(tmp_path / "work"), "--minutes", "0.4", "--every", "20", "--threads", "1",
           "--set", "train_gan.batch_size=8", "--set", "data.val_fraction=0.3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert set(r["recipes"]) == {"ours", "reference"} and r["recall_bars"] == [0.6, 0.7]
    for name, v in r["recipes"].items():
        steps = [c["step"] for c in v["curve"]]
        seconds = [c["seconds"] for c in v["curve"]]
        assert len(steps) >= 2 and steps == sorted(steps) and all(s % 20 == 0 for s in steps)
        assert seconds == sorted(seconds) and 0 < seconds[0] and seconds[-1] <= v["budget_s"] + 5
        assert len(v["curve"][0]["agreement"]) == 3 and (out.parent / v["grid"]).is_file()
    assert r["recipes"]["reference"]["overrides"]["arch"] == "concat" and out.with_suffix(".png").is_file()
    assert len(r["real_ceiling"]["recall"]) == 3 and 0 <= r["real_ceiling"]["worst_recall"] <= 1
    # a rerun scores the stored snapshots again and trains nothing
    before = (tmp_path / "work" / "ours" / "snapshots" / "times.json").read_text()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "work" / "ours" / "snapshots" / "times.json").read_text() == before
    assert json.loads(out.read_text())["recipes"]["ours"]["curve"] == r["recipes"]["ours"]["curve"]
    text = "\n".join(render.time_to_quality_section(out.stem, r, out.parent, tmp_path / "B.md"))
    assert "| ours | the auto recipe |" in text and "bar, recall >= 0.7" in text and "(the ceiling)" in text
    rows = render._time_to_quality_rows({out.stem: r})
    assert [row[0].split(":")[0] for row in rows] == ["MNIST-LT generator", "Time to quality (every class agreement >= 0.98, recall >= 0.6)"]


def test_the_3x_time_to_quality_goal_reads_each_run_and_needs_a_reference_budget_of_3x_ours(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from render import _time_to_quality_rows, three_x_verdict

    assert three_x_verdict(300.0, 900.0, 1200.0) == "met"  # the reference took exactly 3x
    assert three_x_verdict(300.0, 899.0, 1200.0) == "missed"
    assert three_x_verdict(300.0, None, 900.0) == "met"  # never, within 3x our time
    assert three_x_verdict(300.0, None, 600.0) == "undecided"  # never, but stopped at 2x
    assert three_x_verdict(None, None, 6000.0) == "missed"

    def run(ours_s, ref_s, budget_s, width=16):
        curve = [{"worst_agreement": 1.0, "worst_recall": 0.7}]
        return {"threads": 1, "recipes": {
            "ours": {"seconds_to_bar": {"0.6": ours_s, "0.7": None}, "budget_s": 600.0, "curve": curve,
                     "train_gan": {"width": width}},
            "reference": {"seconds_to_bar": {"0.6": ref_s}, "budget_s": budget_s, "curve": curve}}}

    def status(results):
        return _time_to_quality_rows(results)[-1][2]

    short, long = run(324.0, None, 600.0), run(400.0, None, 2160.0)
    assert status({"time_to_quality_mnist_lt": short}).startswith("undecided")
    assert status({"time_to_quality_mnist_lt": short, "time_to_quality_mnist_lt_3x": long}) == "met"
    assert status({"time_to_quality_mnist_lt_3x": long, "time_to_quality_mnist_lt_b": run(400.0, 1000.0, 2160.0)}) == "missed"
    # a run of another recipe (width 32) neither settles nor refutes the shipped one's goal
    assert status({"time_to_quality_mnist_lt": short, "time_to_quality_mnist_lt_w": run(400.0, 500.0, 2160.0, 32)}
                  ).startswith("undecided")
    rows = _time_to_quality_rows({"time_to_quality_mnist_lt": short, "time_to_quality_mnist_lt_3x": long})
    assert rows[-1][3] == "time_to_quality_mnist_lt.json, time_to_quality_mnist_lt_3x.json" and len(rows) == 2


def test_the_shared_cores_goal_row_reads_auto_threads_and_the_default_beside_the_neighbour(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from render import _shared_cores_rows

    def rows(auto, default):
        return {"shared_cores": {"rows": [
            {"case": "auto-spin", "neighbour": False, "share_of_best_alone": 1.0},
            {"case": "auto-spin", "neighbour": True, "share_of_best_alone": auto},
            {"case": "0.4.0", "neighbour": True, "share_of_best_alone": default}]}}

    (row,) = _shared_cores_rows(rows(0.776, 0.332))
    assert row[1] == "cpu_threads auto 78%, default 33%" and row[2].startswith("met with cpu_threads: auto (the default")
    assert _shared_cores_rows(rows(0.39, 0.2))[0][2] == "missed"
    assert _shared_cores_rows(rows(0.5, 0.45))[0][2] == "met with cpu_threads: auto"
    assert _shared_cores_rows({}) == []


def test_per_class_section_shows_the_gain_pair_and_the_rarest_classes(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from render import MAX_CLASS_COLUMNS, per_class_section

    def recall(values):
        return {"per_class_recall": {"mean": values}}

    r = {"gain": {"strategy": "gan_la", "baseline": "logit_adjust"}, "selection": {"best_on_test": "logit_adjust"},
         "train_counts": [40, 400, 4], "class_names": ["a", "b", "c"],
         "strategies": {"gan_la": recall([0.5, 0.25, 1.0]), "logit_adjust": recall([0.75, 0.125, 0.0])}}
    lines = per_class_section(r)
    assert "| strategy | b (400) | a (40) | c (4) |" in lines  # commonest first, rarest last
    assert "| gan_la | 25.0 | 50.0 | 100.0 |" in lines and "| logit_adjust | 12.5 | 75.0 | 0.0 |" in lines
    assert sum(line.startswith("| logit_adjust") for line in lines) == 1  # baseline and best on test: one row
    many = {**r, "train_counts": list(range(1, 21)), "class_names": [f"k{i}" for i in range(20)],
            "strategies": {n: recall([0.5] * 20) for n in ("gan_la", "logit_adjust")}}
    text = "\n".join(per_class_section(many))
    assert f"the {MAX_CLASS_COLUMNS} rarest of 20 classes" in text and "k0 (1)" in text and "k19 (20)" not in text
    assert per_class_section({"strategies": {}}) == []


def test_share_section_counts_the_synthetic_rows_an_epoch(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from render import share_section, synthetic_rows

    def run(share, plan):
        gain = {"strategy": "gan_la_real_prior", "baseline": "mixup_drw",
                "balanced_accuracy": {"mean": 0.005, "ci95": [0.001, 0.009], "per_seed": [0.005] * 3}}
        return {"train_counts": [100, 10, 2], "class_names": ["a", "b", "c"], "plan": {"a": 0, "b": 90, "c": 98},
                "params": {"evaluate": {"synthetic_share": share}, "plan": {"sampling_strategy": plan}},
                "gain": gain, "strategies": {"gan_la_real_prior": {"balanced_accuracy": {"mean": 0.97}}},
                "recommendation": {"strategy": "mixup_drw"}}

    # share 0.25 of 112 real rows: floor(112 / 3) = 37 synthetic rows; no share: the plan's 188
    assert synthetic_rows(run(0.25, "auto")) == (37, 112)
    assert synthetic_rows(run(None, "auto")) == (188, 112)
    lines = share_section({"mnist_lt_share": run(0.25, "auto"), "mnist_lt_diverse_gan_fill_all": run(None, "auto")})
    rows = [line for line in lines if line.startswith("| `")]
    assert "| 37 (25%) |" in rows[0] and "| 188 (63%) |" in rows[1] and "+0.50 [+0.10, +0.90] vs mixup_drw" in rows[0]
    assert share_section({"mnist_lt_share": run(0.25, "auto")}) == []  # one run compares nothing


def test_epochs_section_compares_each_strategy_across_training_lengths(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from render import epochs_section

    def run(epochs, scores, recommended):
        return {"epochs": epochs, "params": {"generate": {"pool_factor": 1}},
                "strategies": {n: {"balanced_accuracy": {"mean": v}} for n, v in scores.items()},
                "recommendation": {"strategy": recommended}}

    short = run(6, {"mixup_drw": 0.9686, "logit_adjust": 0.9680, "gan_la_real_prior": 0.9742}, "mixup_drw")
    long = run(15, {"mixup_drw": 0.9767, "logit_adjust+augment": 0.9793, "gan_la_real_prior": 0.9787}, "mixup_drw")
    lines = epochs_section({"mnist_lt_share": short, "mnist_lt_epochs15": long})
    table = {line.split(" | ")[0]: line for line in lines if line.startswith("| ")}
    assert "(6 epochs, pool x1)" in table["| strategy"] and "(15 epochs, pool x1)" in table["| strategy"]
    assert table["| logit_adjust"].endswith("| 96.80 | - |") and table["| logit_adjust+augment"].endswith("| - | 97.93 |")
    # the GAN strategy against the best non-GAN one on test: 97.42 - 96.86 and 97.87 - 97.93
    margin = table["| best GAN minus best non-GAN strategy, both on test"]
    assert "gan_la_real_prior +0.56 vs mixup_drw" in margin and "gan_la_real_prior -0.06 vs logit_adjust+augment" in margin
    assert epochs_section({"mnist_lt_share": short}) == []  # one run compares nothing


def test_outcome_command_names_outcome_py_when_another_script_calls_it(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from outcome import command_line

    monkeypatch.setattr(sys, "argv", ["benchmarks/scarcity.py", "--tails", "5"])
    assert command_line(["--data", "my data", "--seeds", "3"]) == "python benchmarks/outcome.py --data 'my data' --seeds 3"
    assert command_line(None) == "python benchmarks/scarcity.py --tails 5"  # run as a script: its own argv


def test_benchmarks_keep_every_output_path_in_their_workdir(tmp_path, monkeypatch):
    """Every `paths.*` the config has goes under the workdir, so a benchmark never writes into or
    locks the user's data/ and two benchmarks with their own workdirs run side by side."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import outcome

    from pipeline.config import Paths

    paths = outcome.workdir_paths(tmp_path)
    assert set(paths) == {f"paths.{k}" for k in Paths.model_fields}
    assert all(Path(v).parent == tmp_path or Path(v).parent.parent == tmp_path for v in paths.values())


def test_gtsrb_generator_goal_takes_the_first_snapshot_within_90_min_that_meets_it(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import render

    def point(minutes, mean, worst, recall, step):
        return {"step": step, "seconds": 60 * minutes, "mean_agreement": mean, "worst_agreement": worst,
                "mean_recall": recall}

    slow = [point(30, 0.5, 0.1, 0.1, 1000), point(80, 0.91, 0.75, 0.55, 3000), point(95, 0.99, 0.9, 0.6, 4000)]
    assert render.gtsrb_generator_point(slow)["step"] == 3000
    never = [point(30, 0.5, 0.1, 0.1, 1000), point(85, 0.95, 0.65, 0.6, 3000), point(100, 0.99, 0.9, 0.6, 4000)]
    assert render.gtsrb_generator_point(never)["step"] == 3000  # the worst class misses 0.70; 100 min is past the budget
    run = lambda curve: {"long_tail": "natural", "threads": 2, "recipes": {"r": {"curve": curve}}}  # noqa: E731
    rows = render._gtsrb_generator_row({"time_to_quality_gtsrb": run(never), "time_to_quality_gtsrb_b": run(slow),
                                        "time_to_quality_mnist_lt": run(slow)})
    assert rows[0][2] == "met" and rows[0][3] == "time_to_quality_gtsrb_b.json" and "at 80.0 min" in rows[0][1]
    rows = render._gtsrb_generator_row({"time_to_quality_gtsrb": run(never)})
    assert rows[0][2].startswith("missed: mean agreement 0.95 of 0.90, worst 0.65 of 0.70")
    assert "real test images" not in rows[0][2]
    # a missed row says where held-out real images stand on the same referee
    scored = run(never) | {"real_ceiling": {"mean_agreement": 0.94, "worst_agreement": 0.5, "mean_recall": 0.39}}
    rows = render._gtsrb_generator_row({"time_to_quality_gtsrb": scored})
    assert rows[0][2].endswith("(real test images in place of the samples: mean agreement 0.94, worst 0.50, "
                               "mean recall 0.39)")
    assert render._gtsrb_generator_row({"time_to_quality_mnist_lt": run(slow)}) == []


def test_gtsrb_lt_consistency_row_reads_the_gtsrb_lt_goal_run(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import render

    quality = {"class_consistency": 0.379, "class_consistency_per_class": {"a": 0.9, "b": 0.05, "c": None}}
    rows = render._gtsrb_lt_consistency_row({"gtsrb_lt_strong": {"gan_quality": {"class_consistency": 0.2}},
                                             "gtsrb_lt_guide_ms": {"gan_quality": quality}})
    assert rows == [["GTSRB-LT generator: class consistency >= 0.80", "0.379, worst class 0.050",
                     "missed by 0.421", "gtsrb_lt_guide_ms.json"]]
    met = render._gtsrb_lt_consistency_row({"gtsrb_lt": {"gan_quality": {"class_consistency": 0.85}}})
    assert met[0][1:3] == ["0.850", "met"]
    params = {"generate": {"filter": {"enabled": "auto"}}, "train_gan": {"recipe": "small_color"}}
    filtered = render._gtsrb_lt_consistency_row({"gtsrb_lt": {"gan_quality": quality, "params": params}})
    assert filtered[0][1].startswith("0.379, worst class 0.050 (the set the generation filter kept")
    assert render._gtsrb_lt_consistency_row({"mnist_lt": {"gan_quality": quality}}) == []
    # a run of another configuration on the same data that reaches the bar is named beside the miss;
    # one on other data, or with real images in place of the GAN's, is not
    lt = {"dataset": "gtsrb", "profile": "rho=100"}
    runs = {"gtsrb_lt_guide_ms": {**lt, "gan_quality": quality},
            "gtsrb_lt_longer": {**lt, "gan_quality": {"class_consistency": 0.85}},
            "gtsrb_natural": {"dataset": "gtsrb", "profile": "natural", "gan_quality": {"class_consistency": 0.95}},
            "gtsrb_lt_real": {**lt, "synthetic_source": "real", "gan_quality": {"class_consistency": 0.99}}}
    assert render._gtsrb_lt_consistency_row(runs)[0][2] == (
        "missed by 0.421; reached by configurations not shipped (each note says why): 0.850 in gtsrb_lt_longer.json")


def test_outcome_with_real_images_in_place_of_the_gan(bench):
    """--synthetic real: no GAN; the release holds real training images that neither prepared
    train nor prepared val holds, as many per class as the plan asks, and the result says so."""
    from pipeline.reader import read_images
    from pipeline.tables import read_parquet

    tmp_path = bench[0]
    out = tmp_path / "real" / "tiny.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/outcome.py"), "--data", str(tmp_path / "npz"), "--long-tail",
         "natural=0.8", "--out", str(out), "--seeds", "1", "--workdir", str(tmp_path / "real_work"), *TINY,
         "--set", "plan.sampling_strategy={one: 6, two: 4}", "--synthetic", "real"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["synthetic_source"].startswith("real images") and result["reused_gan"] is False
    assert "train-gan" not in result["stage_s"] and "real-release" in result["stage_s"]
    assert result["real_short"] == {}  # one and two had 1 left out each, and the plan asks 1 each
    assert result["strategies"]["gan"]["balanced_accuracy"]["per_seed"]
    work = tmp_path / "real_work"
    released = read_images(work / "synthetic")
    assert sorted(released.labels.tolist()) == [1, 2]
    source = np.load(tmp_path / "npz" / "train.npz")["x"]
    used = {img.tobytes() for split in ("train", "val") for img in read_parquet(work / "prepared" / f"{split}.parquet").images}
    for img, label in zip(released.images, released.labels):
        assert img.tobytes() not in used  # never a training or validation image
        assert any(np.array_equal(img[..., 0], s) for s in source)  # a real source image


def test_real_release_draw_takes_the_quota_or_all_a_class_has_and_says_which():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from real_release import draw

    from pipeline.data import ImageTable
    from pipeline.errors import DataError

    spare = ImageTable(np.arange(5 * 4, dtype=np.uint8).reshape(5, 2, 2, 1), np.array([0, 0, 0, 1, 1]), ("a", "b"))
    picked, short = draw(spare, {"a": 2, "b": 0}, seed=0)
    assert picked.labels.tolist() == [0, 0] and len({i.tobytes() for i in picked.images}) == 2 and short == {}
    assert draw(spare, {"a": 2}, seed=0)[0].images.tobytes() == picked.images.tobytes()  # seeded
    picked, short = draw(spare, {"a": 1, "b": 3}, seed=0)
    assert picked.labels.tolist() == [0, 1, 1] and short == {"b": [3, 2]}
    with pytest.raises(DataError, match=r"left out no image of the classes the plan fills \(a\); --synthetic real "
                                        r"needs a profile that leaves images out"):
        draw(spare.subset(np.array([3, 4])), {"a": 2, "b": 0}, seed=0)  # natural: nothing of a left out


def test_ceiling_section_reads_only_runs_with_real_images_and_goal_rows_leave_them_out(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from render import ceiling_section, goals_section

    def run(source, scores, gain):
        r = {"dataset": "mnist", "profile": "deepsmote", "seeds": [0, 1, 2, 3, 4], "wall_s": 1000.0,
             "strategies": {n: {"balanced_accuracy": {"mean": v}} for n, v in scores.items()},
             "gain": {"strategy": "gan_la_real_prior", "baseline": "mixup_drw",
                      "balanced_accuracy": {"mean": gain, "ci95": [gain - 0.002, gain + 0.002], "per_seed": [gain] * 5}},
             "selection": {"regret": 0.05, "not_below_best_non_gan_ci": False}}
        return r | ({} if source is None else {"synthetic_source": source})

    scores = {"mixup_drw": 0.9767, "logit_adjust": 0.9750, "gan_la_real_prior": 0.9812}
    real = run("real images the long-tail profile left out", scores, 0.0045)
    lines = ceiling_section({"mnist_lt_real_ceiling": real, "mnist_lt_epochs15": run(None, scores, 0.002)})
    rows = [line for line in lines if line.startswith("| `")]
    assert len(rows) == 1 and rows[0].startswith("| `mnist_lt_real_ceiling.json` | mnist deepsmote | 5 |")
    assert "gan_la_real_prior +0.45 [+0.25, +0.65] vs mixup_drw" in rows[0]
    assert rows[0].endswith("gan_la_real_prior 98.12% vs mixup_drw 97.67%: +0.45 | - |")
    assert ceiling_section({"mnist_lt_epochs15": run("gan", scores, 0.002)}) == []
    short = ceiling_section({"usps": real | {"real_short": {"3": [990, 512]}}})
    assert "| mnist deepsmote (fewer real images than the plan: 3 512 of 990) | 5 |" in "\n".join(short)
    # the real-image run is no benchmark of the recommendation: the selection rows leave it out
    goals = "\n".join(goals_section({"mnist_lt_real_ceiling": real}))
    assert "Recommendation never below" not in goals and "Median selection regret" not in goals
    # the gain row of the GAN run on the same data and profile names the ceiling beside its status
    goals = goals_section({"mnist_lt_real_ceiling": real, "mnist_lt_epochs15": run(None, scores, 0.002)})
    row = next(line for line in goals if line.startswith("| MNIST-LT: validation-best"))
    assert row.startswith("| MNIST-LT: validation-best GAN strategy >= best non-GAN + 1.0 pt, CI above 0 | "
                          "gan_la_real_prior +0.20 points vs mixup_drw") and "| missed by 0.8 points; " in row
    assert row.endswith("; with real images in place of the GAN's gan_la_real_prior +0.45 "
                        "(CI +0.25..+0.65, mnist_lt_real_ceiling.json) | mnist_lt_epochs15.json |")
