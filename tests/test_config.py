from __future__ import annotations

from pathlib import Path

import pytest

from shrink.compression.config import ConfigError, TrainConfig, config_from_dict, load_config

PRESETS = sorted((Path(__file__).resolve().parents[1] / "studies" / "presets").glob("*.toml"))


def test_defaults_validate_and_round_trip():
    config = TrainConfig()
    assert TrainConfig.model_validate_json(config.model_dump_json()) == config


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_presets_load(path: Path):
    config = load_config(path)
    assert config.training.crop % 16 == 0


def test_preset_folders_resolve_against_the_preset_and_overrides_against_the_cwd(tmp_path: Path, monkeypatch):
    (tmp_path / "presets").mkdir()
    preset = tmp_path / "presets" / "p.toml"
    preset.write_text('[data]\ntrain = "../data/train"\ndev = "samples:dev"\n')
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    config = load_config(Path("..") / "presets" / "p.toml")
    assert (config.data.train, config.data.dev) == (str(tmp_path / "data" / "train"), "samples:dev")
    config = load_config(preset, ["data.dev=dev", "data.train=/abs/train"])
    assert (config.data.train, config.data.dev) == ("/abs/train", str(tmp_path / "elsewhere" / "dev"))


def test_presets_exist():
    assert {p.stem for p in PRESETS} >= {"demo", "cpu", "paper"}


def test_overrides_are_typed_and_validated():
    config = config_from_dict({}, ["training.epochs=3", "codec.name=webp", "codec.quality_range=[20, 40]"])
    assert config.training.epochs == 3
    assert config.codec.name == "webp"
    assert config.codec.quality_range == (20, 40)


@pytest.mark.parametrize(
    ("data", "overrides", "path"),
    [
        ({"training": {"epochz": 3}}, [], "training.epochz"),
        ({}, ["training.epochs=zero"], "training.epochs"),
        ({}, ["codec.quality_range=[90, 10]"], "codec"),
        ({}, ["model.ratio=5"], "model.ratio"),
        ({}, ["training.crop=100"], "training"),
        ({}, ["training.gradient_mode=magic"], "training.gradient_mode"),
        (
            {},
            ["model.ratio=3"],
            "training.crop = 128 is not a multiple of model.ratio = 3",
        ),  # a whole-config check
    ],
)
def test_bad_config_names_the_field(data, overrides, path):
    with pytest.raises(ConfigError, match=rf"^{path}"):
        config_from_dict(data, overrides)


def test_a_crop_that_fits_the_ratio_is_accepted():
    assert config_from_dict({}, ["model.ratio=3", "training.crop=144"]).training.crop == 144


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="key=value"):
        config_from_dict({}, ["training.epochs"])


def test_config_from_dict_does_not_mutate_its_input():
    data = {"training": {"epochs": 2}}
    config_from_dict(data, ["training.epochs=5"])
    assert data == {"training": {"epochs": 2}}


def test_missing_and_malformed_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[training\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_the_guards_old_name_judge_still_loads_from_toml_and_checkpoints(tmp_path: Path):
    """``training.guard.when`` was called ``judge``: old configs and checkpoints load, with a warning."""
    old = tmp_path / "old.toml"
    old.write_text('[training.guard]\njudge = "immediate"\n')
    with pytest.warns(DeprecationWarning, match="training.guard.when"):
        config = load_config(old)
    assert config.training.guard.when == "immediate"
    assert "judge" not in config.training.guard.model_dump()  # what is written from now on
    stored = config.model_dump_json().replace('"when":"immediate"', '"judge":"immediate"')
    assert '"judge":"immediate"' in stored  # a checkpoint's config as written before the rename
    with pytest.warns(DeprecationWarning):
        assert TrainConfig.model_validate_json(stored) == config
    with pytest.raises(ConfigError, match="when only"):
        config_from_dict({"training": {"guard": {"judge": "immediate", "when": "after-rec"}}})
