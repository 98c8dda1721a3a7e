"""params.yaml validation: defaults, overrides, unknown keys and bad values."""

import pytest

from pipeline import config
from pipeline.errors import ConfigError


def test_defaults_validate():
    cfg = config.build({})
    assert cfg.data.source == "digits"
    assert cfg.plan.sampling_strategy == "auto"


def test_repo_params_file_validates():
    cfg = config.load("params.yaml")
    assert cfg.paths.prepared == "data/prepared"


def test_dotted_overrides_parse_yaml():
    key, value = config.parse_override("data.long_tail.ratio=100")
    assert (key, value) == ("data.long_tail.ratio", 100)
    cfg = config.build({}, {key: value, "plan.sampling_strategy": {"3": 50}})
    assert cfg.data.long_tail.ratio == 100
    assert cfg.plan.sampling_strategy == {"3": 50}


def test_unknown_key_suggests_close_match():
    with pytest.raises(ConfigError) as e:
        config.build({"data": {"sorce": "digits"}})
    msg = str(e.value)
    assert "unknown key 'data.sorce'" in msg and "did you mean 'data.source'" in msg
    assert "\n" not in msg


def test_unknown_section():
    with pytest.raises(ConfigError, match="unknown key 'trian_gan'.*did you mean 'train_gan'"):
        config.build({"trian_gan": {}})


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
        config.build({}, override)
    assert fragment in str(e.value)


def test_override_into_a_value_is_refused():
    with pytest.raises(ConfigError, match="is a value"):
        config.build({"data": {"source": "digits"}}, {"data.source.x": 1})


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="line 2: not valid YAML"):
        config.load(p)
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "missing.yaml")
