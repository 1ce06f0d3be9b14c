"""Run configs: YAML + overrides into frozen dataclasses, clear errors for unknown keys, round trips."""

from pathlib import Path

import pytest
import yaml

from funcdiff.config import RunConfig, config_from_dict, load_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def write(tmp_path, raw) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path):
    config = load_config(path)
    assert config_from_dict(config.to_dict()) == config
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config
    assert "in_channels" not in config.model


def test_overrides_are_parsed_as_yaml_and_typed(tmp_path):
    path = write(tmp_path, {"train": {"lr": "2e-3", "steps": 10}, "model": {"n_modes": [8, 8]}})
    config = load_config(path, ["train.lr=1e-3", "train.bf16=true", "model.n_modes=[6, 6]", "data.channels=[a, u]",
                                "name=demo", "data.path=null"])
    assert config.train.lr == pytest.approx(1e-3) and isinstance(config.train.lr, float)  # YAML reads 1e-3 as str
    assert config.train.bf16 is True and config.train.steps == 10
    assert config.model["n_modes"] == [6, 6] and config.data.channels == ("a", "u") and config.name == "demo"
    assert config.model_config(2)["in_channels"] == 2 == config.model_config(2)["out_channels"]


@pytest.mark.parametrize("raw, match", [
    ({"train": {"lrr": 1e-3}}, r"train\.lrr.*valid keys for 'train'.*'lr'"),
    ({"trian": {"lr": 1e-3}}, r"unknown config section.*trian.*valid sections"),
    ({"model": {"n_mode": [8, 8]}}, r"model\.n_mode.*valid keys for 'model'.*n_modes"),
    ({"model": {"in_channels": 2}}, r"in/out channels come from data"),
    ({"train": {"steps": "many"}}, r"train\.steps"),
    ({"train": {"bf16": "yes please"}}, r"train\.bf16"),
    ({"data": {"source": "ftp"}}, r"data\.source"),
])
def test_bad_file_keys_and_values_are_clear_errors(tmp_path, raw, match):
    with pytest.raises(ValueError, match=match):
        load_config(write(tmp_path, raw))


@pytest.mark.parametrize("override, match", [
    ("train.lrr=1", r"train\.lrr.*valid keys"),
    ("sampler.steps=4", r"unknown config section 'sampler'"),
    ("model.widht=3", r"model\.widht"),
    ("lr=3", r"section\.key=value"),
    ("train.lr", r"section\.key=value"),
])
def test_bad_overrides_are_clear_errors(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        load_config(write(tmp_path, {}), [override])


def test_defaults_and_replace_are_immutable():
    config = RunConfig()
    changed = config.replace(["train.steps=7"])
    assert changed.train.steps == 7 and config.train.steps != 7
    with pytest.raises(Exception):
        config.train.steps = 3  # frozen dataclass
