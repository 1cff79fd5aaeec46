"""Search spaces sample what they declare, and a trial's params land at their dotted TrainConfig paths."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    json_to_distribution,
)

from shrink.search.cli import main
from shrink.search.space import config_for, distributions, params_from_trial, search_space_json, suggest
from shrink.search.spec import ResolvedSpec, SpecError, load_spec, validate_spec

from .conftest import tiny_config_dict

DEMO = Path(__file__).resolve().parents[1] / "studies" / "demo.toml"
N_TRIALS = 30

SPACE = {
    "switch.dropout": {"type": "categorical", "choices": [False, True]},
    "model.comcnn.depth": {"type": "int", "low": 2, "high": 8, "step": 2},
    "optim_rec.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "model.reccnn.width": {"type": "categorical", "choices": [8, 12, 16]},
    "training.gradient_mode": {"type": "categorical", "choices": ["straight-through", "identity"]},
    "loss.rate_weight": {"type": "fixed", "value": 0.05},
    "model.reccnn.dropout": {"type": "float", "low": 0.05, "high": 0.2, "when": {"switch.dropout": True}},
    "model.reccnn.depth": {"type": "int", "low": 4, "high": 6, "when": {"model.comcnn.depth": [4, 6]}},
}
FIXED = {"loss.rate_weight"}


def resolve(folder: Path, space: dict) -> ResolvedSpec:
    base = tiny_config_dict(folder)
    return validate_spec({"base": base, "space": space}, folder)


@pytest.fixture
def spec(tmp_path: Path) -> ResolvedSpec:
    return resolve(tmp_path, SPACE)


def get_path(data, dotted: str):
    for key in dotted.split("."):
        data = data[int(key)] if isinstance(data, list) else data[key]
    return data


def sample(spec: ResolvedSpec, n: int = N_TRIALS) -> list[tuple[optuna.trial.FrozenTrial, dict]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        params = suggest(trial, spec)
        study.tell(trial, 0.0)
        out.append((study.trials[-1], params))
    return out


def test_sampled_values_lie_in_their_declared_space(spec: ResolvedSpec):
    samples = sample(spec)
    assert len(samples) == N_TRIALS
    switches, depths = set(), set()
    for frozen, params in samples:
        assert params["model.comcnn.depth"] in {2, 4, 6, 8}
        assert isinstance(params["model.comcnn.depth"], int)
        assert 1e-4 <= params["optim_rec.lr"] <= 1e-2
        assert params["model.reccnn.width"] in {8, 12, 16}
        assert params["training.gradient_mode"] in {"straight-through", "identity"}
        assert params["switch.dropout"] in (False, True)
        assert params["loss.rate_weight"] == 0.05  # fixed: always, and never sampled
        # conditional entries appear exactly when their conditions hold
        assert ("model.reccnn.dropout" in params) == (params["switch.dropout"] is True)
        if "model.reccnn.dropout" in params:
            assert 0.05 <= params["model.reccnn.dropout"] <= 0.2
        assert ("model.reccnn.depth" in params) == (params["model.comcnn.depth"] in (4, 6))
        if "model.reccnn.depth" in params:
            assert params["model.reccnn.depth"] in {4, 5, 6}
        # Optuna records exactly the sampled (non-fixed) params
        assert frozen.params == {k: v for k, v in params.items() if k not in FIXED}
        assert list(params) == [name for name in SPACE if name in params]  # in declaration order
        switches.add(params["switch.dropout"])
        depths.add(params["model.comcnn.depth"])
    assert switches == {False, True}  # both branches were exercised
    assert depths == {2, 4, 6, 8}
    lrs = [params["optim_rec.lr"] for _, params in samples]
    assert min(lrs) < 1e-3 < max(lrs)  # log scale: a decade each side of the geometric middle gets hits


def test_params_from_trial_matches_suggest(spec: ResolvedSpec):
    for frozen, params in sample(spec, 10):
        assert params_from_trial(spec, frozen.params) == params
    with pytest.raises(SpecError, match="no value for space entry 'switch.dropout'"):
        params_from_trial(spec, {})


def test_config_for_sets_each_value_at_its_path(spec: ResolvedSpec):
    base = spec.base_config.model_dump(mode="json")
    for _, params in sample(spec, 12):
        config = config_for(spec, params).model_dump(mode="json")
        for name, value in params.items():
            if name.startswith("switch."):
                continue
            assert get_path(config, name) == value, name
        if "model.reccnn.dropout" not in params:
            assert config["model"]["reccnn"]["dropout"] == base["model"]["reccnn"]["dropout"] == 0.1
        if "model.reccnn.depth" not in params:
            assert config["model"]["reccnn"]["depth"] == base["model"]["reccnn"]["depth"] == 3
        assert "switch" not in config
        # everything the params do not name is the base config's
        assert config["training"] == {**base["training"], "gradient_mode": params["training.gradient_mode"]}
        assert config["data"] == base["data"]


def test_config_for_ignores_switch_entries(spec: ResolvedSpec):
    assert config_for(spec, {"switch.dropout": True}) == spec.base_config
    assert config_for(spec, {}) == spec.base_config


def test_fixed_quality_sets_the_dev_operating_point(tmp_path: Path):
    fixed = resolve(tmp_path, {"codec.quality": {"type": "fixed", "value": 40}})
    assert distributions(fixed) == {}
    assert fixed.base_config.data.dev_qualities == [30, 70]
    (frozen, params), *_ = sample(fixed, 1)
    assert params == {"codec.quality": 40} and frozen.params == {}
    config = config_for(fixed, params)
    assert config.codec.quality == 40
    assert config.data.dev_qualities == [40]


def test_sampled_quality_sets_the_dev_operating_point(tmp_path: Path):
    sampled = resolve(tmp_path, {"codec.quality": {"type": "int", "low": 10, "high": 90, "step": 10}})
    for _, params in sample(sampled, 5):
        config = config_for(sampled, params)
        assert config.data.dev_qualities == [params["codec.quality"]] == [config.codec.quality]
    # without a quality the dev set keeps the base config's curve
    assert config_for(sampled, {}).data.dev_qualities == [30, 70]


def test_search_space_json_round_trips_to_the_distributions(spec: ResolvedSpec):
    dists = distributions(spec)
    assert list(dists) == [name for name in SPACE if name not in FIXED]  # conditional entries included
    assert dists["model.comcnn.depth"] == IntDistribution(2, 8, step=2)
    assert dists["optim_rec.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert dists["switch.dropout"] == CategoricalDistribution([False, True])
    assert dists["model.reccnn.depth"] == IntDistribution(4, 6)

    parsed = json.loads(search_space_json(spec))
    assert list(parsed) == list(dists)
    assert "loss.rate_weight" not in parsed
    assert {name: json_to_distribution(json.dumps(raw)) for name, raw in parsed.items()} == dists


def test_shrink_space_prints_the_demo_search_space(capsys):
    assert main(["space", str(DEMO)]) == 0
    out = capsys.readouterr().out
    parsed = json.loads(out)
    resolved = load_spec(DEMO)
    assert out.strip() == search_space_json(resolved)
    assert list(parsed) == list(resolved.spec.space)  # the demo has no fixed entries
    assert {name: json_to_distribution(json.dumps(raw)) for name, raw in parsed.items()} == distributions(
        resolved
    )
    assert parsed["codec.quality"]["name"] == "IntDistribution"
    assert parsed["codec.quality"]["attributes"]["step"] == 10


def test_shrink_space_bad_spec_exits_2(tmp_path: Path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[space."model.comcnn.depth"]\ntype = "int"\nlow = 1\nhigh = 4\n')
    assert main(["space", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shrink space: error: space.model.comcnn.depth = 1"), lines


def test_config_for_refuses_a_combination_the_config_refuses(tmp_path: Path):
    # each end alone validates against the base range (20, 80); together they can cross
    spec = resolve(
        tmp_path,
        {
            "codec.quality_range.0": {"type": "int", "low": 10, "high": 60},
            "codec.quality_range.1": {"type": "int", "low": 30, "high": 90},
        },
    )
    ok = config_for(spec, {"codec.quality_range.0": 15, "codec.quality_range.1": 85})
    assert ok.codec.quality_range == (15, 85)
    with pytest.raises(SpecError, match=r"^trial params .*quality_range"):
        config_for(spec, {"codec.quality_range.0": 60, "codec.quality_range.1": 30})


def test_config_for_refuses_a_value_outside_the_config(spec: ResolvedSpec):
    with pytest.raises(SpecError, match=r"^trial params .*model\.comcnn\.depth"):
        config_for(spec, {"model.comcnn.depth": 1})
