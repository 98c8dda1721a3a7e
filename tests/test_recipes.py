"""train_gan.recipe: each image shape gets its recipe, explicit values win, and the stages, the
checkpoint, the manifest, the report's params and `augment show-params` carry the resolved values."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline import cli, config, gan_fingerprint, params_file, recipes
from pipeline.stages import stage
from pipeline.stages.files import gan_final_path, read_counts
from pipeline.errors import ConfigError
from pipeline.models import GAN_ARCHS
from tests.conftest import REPO, tiny_arrays

# params.yaml's train_gan values before the recipes: the demo must train with exactly these
DEMO_BEFORE = {"width": 32, "aux_weight": 0.0, "diffaug": "", "steps": 2000}


def repo_params(overrides=None) -> config.Config:
    return params_file.load(REPO / "params.yaml", overrides)


@pytest.mark.parametrize("shape, name", [
    ((8, 8, 1), "demo"), ((9, 9, 1), "tiny_gray"), ((16, 16, 1), "tiny_gray"), ((28, 28, 1), "small_gray"), ((32, 32, 3), "small_color"),
    ((8, 8, 3), "small_color"), ((64, 64, 1), "small_gray"),
])
def test_each_image_shape_gets_its_recipe(shape, name):
    section, choice = recipes.resolve(repo_params().train_gan, shape, {"a": 3, "b": 40})
    assert (choice.name, section.recipe) == (name, name)
    assert {k: getattr(section, k) for k in recipes.RECIPES[name]} == recipes.RECIPES[name]
    assert choice.line().startswith(f"train_gan recipe auto -> {name} (")
    assert "2 classes of 3..40 images" in choice.line()


def test_the_recipes_are_the_benchmarks():
    assert recipes.RECIPES["demo"] == DEMO_BEFORE
    assert recipes.RECIPES["tiny_gray"] == DEMO_BEFORE | {"ms_weight": 0.3}
    gtsrb = {"width": 16, "aux_weight": 1.0, "diffaug": "color,translation,cutout", "steps": 13000}
    assert recipes.RECIPES["small_color"] == gtsrb | {"ms_weight": 0.3, "guide_weight": 1.0}
    assert recipes.RECIPES["small_gray"] == gtsrb | {"aux_weight": 1.5, "ms_weight": 0.3, "steps": 12000}


def test_the_demo_trains_with_the_settings_it_had():
    """8x8 digits resolve to params.yaml's former values: every train_gan field but `recipe` equal,
    so the demo's weights, images and report are those of before."""
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    tree["train_gan"] |= DEMO_BEFORE
    before = params_file.build(tree).train_gan
    after = recipes.resolve(repo_params().train_gan, (8, 8, 1), None)[0]
    # the checkpoint fingerprint too: a demo final.pt trained before the recipes is still this run's
    assert gan_fingerprint.config_fingerprint(after, "data") == gan_fingerprint.config_fingerprint(before, "data")
    before, after = before.model_dump(), after.model_dump()
    assert after.pop("recipe") == "demo" and before.pop("recipe") == "auto"
    assert after == before


def test_an_explicit_value_wins_from_params_or_set(tmp_path):
    section, choice = recipes.resolve(repo_params({"train_gan.steps": 500}).train_gan, (28, 28, 1))
    assert section.steps == 500 and section.width == 16
    assert choice.kept == {"steps": 500} and "steps" not in choice.applied
    assert choice.line().endswith("; params.yaml/--set keep steps=500")
    # the same value as the recipe's, given explicitly, is no override worth naming
    params = tmp_path / "params.yaml"
    params.write_text("train_gan:\n  width: 16\n  diffaug: ''\n")
    section, choice = recipes.resolve(params_file.load(params).train_gan, (32, 32, 3))
    assert (section.width, section.diffaug, section.aux_weight) == (16, "", 1.0)
    assert choice.kept == {"diffaug": ""} and "width" not in choice.applied


def test_a_named_recipe_needs_no_data_and_resolving_twice_changes_nothing():
    section, choice = recipes.resolve(repo_params({"train_gan.recipe": "small_gray"}).train_gan)
    assert (section.width, section.steps, choice.asked, choice.name) == (16, 12000, "small_gray", "small_gray")
    again, choice = recipes.resolve(section, (8, 8, 1))
    assert again == section and choice.applied == {}
    none = recipes.resolve(repo_params({"train_gan.recipe": "none"}).train_gan)[0]
    assert none.model_dump() | {"recipe": "auto"} == config.TrainGanConfig().model_dump()


@pytest.mark.parametrize("arch", ["concat", "dcgan"])
def test_an_arch_trains_with_the_values_given_and_no_settings_of_its_own(arch):
    """GanArch carries no recipe: `arch: concat` trains with the train_gan values (hinge by default),
    and the tutorial's BCE only when the params name it, as benchmarks/speed.py's reference does."""
    assert not any(hasattr(a, "recipe") for a in GAN_ARCHS.values())
    default = config.TrainGanConfig()
    section, _ = recipes.resolve(params_file.build({"train_gan": {"arch": arch}}).train_gan, (28, 28, 1))
    assert section.model_dump(exclude={"arch", "recipe"}) == default.model_dump(exclude={"arch", "recipe"})
    named = {"arch": arch, "loss": "bce", "beta1": 0.5, "diffaug": ""}
    section, _ = recipes.resolve(params_file.build({"train_gan": named}).train_gan, (28, 28, 1))
    assert (section.loss, section.beta1, section.diffaug) == ("bce", 0.5, "")


def test_another_arch_gets_no_recipe_and_auto_needs_the_data():
    section, choice = recipes.resolve(repo_params({"train_gan.arch": "dcgan"}).train_gan, (28, 28, 1))
    assert choice.name == "none" and "measured with sngan" in choice.reason and section.aux_weight == 0.0
    # sngan_hier (sngan with BigGAN's conditioning) is compared with sngan under the same recipe
    section, choice = recipes.resolve(repo_params({"train_gan.arch": "sngan_hier"}).train_gan, (28, 28, 1))
    assert choice.name == "small_gray" and section.aux_weight == 1.5 and section.arch == "sngan_hier"
    with pytest.raises(ConfigError, match="resolved from the prepared data; run `augment prepare`"):
        recipes.resolve(repo_params().train_gan)


def test_bad_recipes_are_refused():
    with pytest.raises(ConfigError, match=r"train_gan.recipe = 'mnist': 'mnist' is not one of: auto, demo, "
                                          r"tiny_gray, small_gray, small_color, none"):
        params_file.build({"train_gan": {"recipe": "mnist"}})
    # refused when the params load, not when the stage resolves the recipe
    with pytest.raises(ConfigError, match="train_gan: recipe 'small_gray' sets aux_weight 1.5, and arch 'concat' "
                                          "has no class head"):
        params_file.build({"train_gan": {"recipe": "small_gray", "arch": "concat"}})


# ----------------------------------------------------------------------------- through the stages


def _npz_28(folder: Path) -> Path:
    folder.mkdir()
    x, y = tiny_arrays((12, 8, 6), size=28)
    np.savez(folder / "train.npz", x=x[..., 0], y=y)
    xt, yt = tiny_arrays((3, 3, 3), size=28, seed=1)
    np.savez(folder / "test.npz", x=xt[..., 0], y=yt)
    return folder


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A working folder with the repo's params.yaml, its data.source a 28x28 npz folder."""
    monkeypatch.chdir(tmp_path)
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    tree["data"]["source"] = str(_npz_28(tmp_path / "npz"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    return tmp_path


def show_params(capsys, *args) -> dict:
    assert cli.main(["show-params", *args]) == 0
    return json.loads(capsys.readouterr().out)["train_gan"]


def test_show_params_says_auto_until_prepare_then_what_it_resolved_to(project, capsys):
    shown = show_params(capsys, "--set", "train_gan.steps=9")
    assert shown["recipe"] == "auto (resolved after prepare)"
    assert shown["width"] == shown["aux_weight"] == shown["diffaug"] == "(from the recipe)" and shown["steps"] == 9
    stage("prepare")(params_file.load())
    shown = show_params(capsys, "--set", "train_gan.steps=9")
    assert (shown["recipe"], shown["width"], shown["aux_weight"], shown["steps"]) == ("small_gray", 16, 1.5, 9)
    # a named recipe is shown resolved with or without the data
    assert show_params(capsys, "--set", "train_gan.recipe=demo")["width"] == 32


def test_the_resolved_recipe_is_logged_and_in_the_checkpoint_manifest_and_report(project, caplog, monkeypatch):
    tiny = {"train_gan.steps": 2, "train_gan.batch_size": 8, "train_gan.checkpoint_every": 2,
            "train_gan.sample_every": 2, "plan.sampling_strategy": {"2": 8}}
    cfg = params_file.load(overrides=tiny)
    stage("prepare")(cfg)
    stage("plan")(cfg)
    with caplog.at_level(logging.INFO, logger="augment"):
        stage("train_gan")(cfg)
    counts = read_counts(cfg)["counts"]["train"].values()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train_gan recipe")]
    assert lines == [f"train_gan recipe auto -> small_gray (28x28x1 images, 3 classes of {min(counts)}..{max(counts)} "
                     "images): sets width=16 aux_weight=1.5 ms_weight=0.3 diffaug=color,translation,cutout; params.yaml/--set keep "
                     "steps=2"]
    meta = torch.load(gan_final_path(cfg), map_location="cpu", weights_only=True)
    assert meta["width"] == 16
    assert {k: meta["config"][k] for k in ("recipe", "width", "aux_weight", "diffaug", "steps")} == {
        "recipe": "small_gray", "width": 16, "aux_weight": 1.5, "diffaug": "color,translation,cutout", "steps": 2}
    stage("generate")(cfg)  # its check of final.pt against the params resolves the same recipe
    manifest = json.loads((Path(cfg.paths.synthetic) / "manifest.json").read_text())
    assert manifest["params"]["train_gan"]["recipe"] == "small_gray"
    assert manifest["params"]["train_gan"]["width"] == 16

    import pipeline.stages.report as report_stage

    seen = {}
    Path(cfg.paths.reports).mkdir(parents=True)
    (Path(cfg.paths.reports) / "metrics.json").write_text("{}")
    monkeypatch.setattr(report_stage, "read_results", lambda out: {"metrics": {}, "predictions": None})
    monkeypatch.setattr(report_stage, "write_report", lambda out, *a, params, **k: seen.update(params) or [])
    stage("report")(cfg)
    assert seen["train_gan"]["recipe"] == "small_gray" and seen["train_gan"]["aux_weight"] == 1.5
