"""params.yaml validation: defaults, overrides, unknown keys and bad values."""

import pytest
from pydantic import ValidationError

from pipeline import params_file
from pipeline.errors import ConfigError


def test_defaults_validate():
    cfg = params_file.build({})
    assert cfg.data.source == "digits"
    assert cfg.plan.sampling_strategy == "auto"


def test_repo_params_file_validates():
    cfg = params_file.load("params.yaml")
    assert cfg.paths.prepared == "data/prepared"


def test_dotted_overrides_parse_yaml():
    key, value = params_file.parse_override("data.long_tail.ratio=100")
    assert (key, value) == ("data.long_tail.ratio", 100)
    cfg = params_file.build({}, {key: value, "plan.sampling_strategy": {"3": 50}})
    assert cfg.data.long_tail.ratio == 100
    assert cfg.plan.sampling_strategy == {"3": 50}


def test_unknown_key_suggests_close_match():
    with pytest.raises(ConfigError) as e:
        params_file.build({"data": {"sorce": "digits"}})
    msg = str(e.value)
    assert "unknown key 'data.sorce'" in msg and "did you mean 'data.source'" in msg
    assert "\n" not in msg


def test_unknown_section():
    with pytest.raises(ConfigError, match="unknown key 'trian_gan'.*did you mean 'train_gan'"):
        params_file.build({"trian_gan": {}})


@pytest.mark.parametrize(
    "override, fragment",
    [
        ({"data.val_fraction": 1.5}, "data.val_fraction = 1.5"),
        ({"data.long_tail.profile": "zipf"}, "'auto', 'none', 'exponential', 'deepsmote', 'counts' or 'fraction'"),
        ({"data.channels": 2}, "data.channels"),
        ({"data.long_tail.ratio": 0.5}, "greater than or equal to 1"),
        ({"data.long_tail.counts": [3, 0]}, "every count must be >= 1"),
        ({"evaluate.batch_size": 1}, "evaluate.batch_size"),
    ],
)
def test_bad_values_name_key_and_choices(override, fragment):
    with pytest.raises(ConfigError) as e:
        params_file.build({}, override)
    assert fragment in str(e.value)


@pytest.mark.parametrize(
    "override, line",
    [
        ({"generate.filter.enabled": "maybe"}, "generate.filter.enabled = 'maybe': Input should be 'auto', or a valid "
                                               "boolean, unable to interpret input"),
        ({"evaluate.workers": "many"}, "evaluate.workers = 'many': Input should be a valid integer, unable to parse "
                                       "string as an integer, or 'auto'"),
        ({"train_gan.cpu_threads": 0}, "train_gan.cpu_threads = 0: Input should be greater than or equal to 1, or 'auto'"),
    ],
)
def test_a_union_field_names_its_key_and_every_alternative(override, line):
    # pydantic reports each union member apart, under `key.literal['auto']`, `key.int`
    with pytest.raises(ConfigError) as e:
        params_file.build({}, override, override_source="--set")
    assert str(e.value) == f"--set: {line}"


def test_override_into_a_value_is_refused():
    with pytest.raises(ConfigError, match="is a value"):
        params_file.build({"data": {"source": "digits"}}, {"data.source.x": 1})


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="line 2: not valid YAML"):
        params_file.load(p)
    with pytest.raises(ConfigError, match="not found"):
        params_file.load(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "section, fragment",
    [
        ({"loss": "hinge", "label_smoothing": 0.1},
         "params.yaml: train_gan: label_smoothing applies to loss bce only, not 'hinge'; set it to 0"),
        ({"arch": "concat", "aux_weight": 1.0}, "aux_weight > 0 needs a discriminator with a class head"),
        ({"recipe": "small_gray", "arch": "concat"},
         "train_gan: recipe 'small_gray' sets aux_weight 1.5, and arch 'concat' has no class head"),
        ({"early_stop_patience": 2}, "early_stop_patience > 0 needs track_quality: true"),
        ({"classes": []}, "train_gan.classes = []: list at least one class name, or null for every class"),
    ],
)
def test_rules_across_fields_fire_when_the_params_load(section, fragment):
    with pytest.raises(ConfigError) as e:
        params_file.build({"train_gan": section})
    assert fragment in str(e.value)


def test_rules_across_fields_let_valid_combinations_through():
    assert params_file.build({"train_gan": {"loss": "bce", "label_smoothing": 0.1}}).train_gan.label_smoothing == 0.1
    # an explicit aux_weight: 0 keeps the recipe's class head off an arch without one
    assert params_file.build({"train_gan": {"recipe": "small_gray", "arch": "concat", "aux_weight": 0}})


def test_choices_are_the_registries_that_dispatch():
    from pipeline.diffaug import AUGMENTS
    from pipeline.losses import LOSSES
    from pipeline.models import GAN_ARCHS

    for key, registry in (("loss", LOSSES), ("arch", GAN_ARCHS)):
        with pytest.raises(ConfigError) as e:
            params_file.build({"train_gan": {key: "nope"}})
        assert f"is not one of: {', '.join(sorted(registry))}" in str(e.value)
    with pytest.raises(ConfigError, match=f"is not one of: {', '.join(sorted(AUGMENTS))}"):
        params_file.build({"train_gan": {"diffaug": "blur"}})


def test_a_loaded_config_is_frozen():
    cfg = params_file.build({})
    for obj, key, value in ((cfg, "train_gan", cfg.train_gan), (cfg.train_gan, "steps", 5),
                            (cfg.evaluate.mix, "search", "full"), (cfg.data.long_tail, "ratio", 3.0)):
        with pytest.raises(ValidationError, match="frozen"):
            setattr(obj, key, value)
    derived = cfg.model_copy(update={"train_gan": cfg.train_gan.model_copy(update={"steps": 5})})
    assert (derived.train_gan.steps, cfg.train_gan.steps) == (5, 2000)  # a new object; the loaded one unchanged


def test_select_by_names_its_choices():
    assert params_file.build({"evaluate": {"select_by": "nll"}}).evaluate.select_by == "nll"
    with pytest.raises(ConfigError) as e:
        params_file.build({"evaluate": {"select_by": "accuracy"}})
    assert "select_by" in str(e.value) and "'balanced_accuracy', 'nll' or 'strongest_within_noise'" in str(e.value)


def test_select_by_default_and_names_match_the_recommend_registry():
    """config.EvaluateConfig states evaluate.select_by's default and names without importing
    pipeline.recommend (pandas); they must stay those of its registry."""
    import typing

    from pipeline import recommend
    from pipeline.config import EvaluateConfig

    field = EvaluateConfig.model_fields["select_by"]
    assert field.default == recommend.DEFAULT_SELECT_BY
    assert set(typing.get_args(field.annotation)) == set(recommend.SELECTORS)
