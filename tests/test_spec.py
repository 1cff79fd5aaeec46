"""Study specs: validation names the field path, resolved specs round-trip and diff, `shrink study create`."""

from __future__ import annotations

import copy
import json
import math
import os
import re
from pathlib import Path

import optuna
import pytest

from shrink.compression.config import ConfigError, load_config, tomllib
from shrink.search.cli import main
from shrink.search.spec import ResolvedSpec, SpecError, load_spec, spec_diff, validate_spec

from .conftest import SHARED_DATA, tiny_config_dict

STUDIES = Path(__file__).resolve().parents[1] / "studies"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def write_toml(path: Path, data: dict) -> Path:
    """Nested dicts become [a."b.c"] tables (space entries are dotted names), in insertion order."""
    lines: list[str] = []

    def table(node: dict, header: str) -> None:
        scalars = {k: v for k, v in node.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in node.items() if isinstance(v, dict)}
        if header and (scalars or not tables):
            lines.append(f"[{header}]")
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in scalars.items())
        for key, sub in tables.items():
            table(sub, f"{header}.{_toml_key(key)}" if header else _toml_key(key))

    table(data, "")
    path.write_text("\n".join(lines) + "\n")
    assert tomllib.loads(path.read_text()) == json.loads(json.dumps(data))  # the helper itself is faithful
    return path


def tiny_spec(folder: Path, **budget) -> dict:
    """A spec whose base is conftest's tiny config; [data] holds the folders, [budget] overrides training."""
    base = tiny_config_dict(folder)
    data = base.pop("data")
    base["data"] = {"dev_qualities": data["dev_qualities"]}
    return {
        "name": "tiny",
        "seed": 5,
        "base": base,
        "data": {"train": data["train"], "dev": data["dev"], "dev_max_images": 2},
        "budget": {"n_trials": 2, "epochs": 1, "steps_per_epoch": 1, "batch_size": 2, **budget},
        "objective": {"mode": "multi"},
        "pruner": {"name": "none"},
        "sampler": {"name": "random"},
        "space": {
            "switch.dropout": {"type": "categorical", "choices": [False, True]},
            "model.comcnn.width": {"type": "categorical", "choices": [8, 12]},
            "codec.quality": {"type": "int", "low": 20, "high": 80, "step": 20},
            "model.reccnn.dropout": {
                "type": "float",
                "low": 0.05,
                "high": 0.2,
                "when": {"switch.dropout": True},
            },
        },
    }


def with_space(folder: Path, space: dict, **top) -> dict:
    data = tiny_spec(folder)
    data["space"] = space
    data.update(top)
    return data


# ---- shipped specs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["demo.toml", "cpu.toml", "full.toml", "paper.toml"])
def test_shipped_specs_load(name: str):
    path = STUDIES / name
    if not path.is_file():
        pytest.skip(f"{path} is not shipped")
    resolved = load_spec(path)
    assert resolved.spec.space, "a shipped spec searches something"
    budget = resolved.spec.budget
    if budget.epochs is not None:
        assert resolved.base_config.training.epochs == budget.epochs


@pytest.mark.parametrize(("name", "preset"), [("cpu", "cpu"), ("full", "cpu"), ("paper", "paper")])
def test_shipped_data_folders_are_the_shared_ones_from_any_working_directory(
    name, preset, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    for config in (
        load_spec(STUDIES / f"{name}.toml").base_config,
        load_config(STUDIES / "presets" / f"{preset}.toml"),
    ):
        assert Path(config.data.train) == Path(os.path.normpath(SHARED_DATA / "train"))
        assert Path(config.data.dev) == Path(os.path.normpath(SHARED_DATA / "dev"))
    demo = load_spec(STUDIES / "demo.toml").base_config.data
    assert (demo.train, demo.dev) == ("samples:train", "samples:dev")  # sample sets are names, not folders


def test_relative_data_folders_resolve_against_the_spec_and_preset_files(tmp_path: Path, monkeypatch):
    studies = tmp_path / "project" / "studies"
    (studies / "presets").mkdir(parents=True)
    write_toml(studies / "presets" / "p.toml", {"data": {"train": "../../data/train", "dev": "../../data/x"}})
    write_toml(studies / "s.toml", {"base_preset": "presets/p.toml", "data": {"dev": "../data/dev"}})
    project = tmp_path / "project"
    resolved = []
    for cwd, spec in (
        (tmp_path, studies / "s.toml"),
        (studies, Path("s.toml")),
        (project, Path("studies/s.toml")),
    ):
        monkeypatch.chdir(cwd)
        resolved.append(load_spec(spec))
    assert all(r == resolved[0] for r in resolved)
    data = resolved[0].base_config.data
    assert (data.train, data.dev) == (str(project / "data" / "train"), str(project / "data" / "dev"))
    assert resolved[0].spec.data.dev == str(project / "data" / "dev")  # stored resolved in the spec too
    # folders given on the command line are relative to the working directory
    monkeypatch.chdir(tmp_path)
    data = load_spec(studies / "s.toml", ["data.train=here/train", "base.data.dev=here/dev"]).base_config.data
    assert data.train == str(tmp_path / "here" / "train")
    assert data.dev == str(project / "data" / "dev")  # [data] still wins over [base.data]
    assert load_spec(studies / "s.toml", ["data.dev=samples:dev"]).base_config.data.dev == "samples:dev"


def test_demo_spec_resolves_preset_base_data_and_budget():
    resolved = load_spec(STUDIES / "demo.toml")
    spec, config = resolved.spec, resolved.base_config
    assert spec.name == "demo" and spec.budget.n_trials == 8
    assert (spec.refine.epochs, spec.refine.steps_per_epoch, spec.test.data) == (6, 40, "samples:test")
    # [budget] wins over the preset (epochs = 6, steps_per_epoch = 40 there); [base] tables merge into it
    assert (config.training.epochs, config.training.steps_per_epoch) == (4, 30)
    assert config.training.time_budget_s == 120
    assert config.training.rec_warmup_epochs == 1
    assert config.device.threads == 2
    assert config.model.reccnn.width == 24  # from the preset, untouched
    assert list(spec.space)[0] == "codec.quality" and list(spec.space)[-1] == "model.reccnn.dropout"
    assert spec.space["model.reccnn.dropout"].when == {"switch.dropout": True}


# ---- validation errors name the field ---------------------------------------------------------------------
def _float(low, high, **extra) -> dict:
    return {"type": "float", "low": low, "high": high, **extra}


def _int(low, high, **extra) -> dict:
    return {"type": "int", "low": low, "high": high, **extra}


def _categorical(choices: list) -> dict:
    return {"type": "categorical", "choices": choices}


SWITCH = _categorical([False, True])

RATE_JUDGE = {"judge": "rate"}

BAD_SPECS = {
    "unknown top-level key": ({"bogus": 1}, "bogus", "Extra inputs"),
    "unknown budget key": ({"budget": {"n_trial": 3}}, "budget.n_trial", "Extra inputs"),
    "wrong type": ({"budget": {"n_trials": "ten"}}, "budget.n_trials", "integer"),
    "out of bounds": ({"budget": {"n_trials": 0}}, "budget.n_trials", "greater than"),
    "unknown data key": ({"data": {"folder": "x"}}, "data.folder", "Extra inputs"),
    "unknown pruner": ({"pruner": {"name": "asha"}}, "pruner.name", "median"),
    "int range inverted": (
        {"space": {"model.comcnn.depth": _int(5, 3)}},
        "space.model.comcnn.depth",
        "empty",
    ),
    "float range inverted": (
        {"space": {"loss.alpha_rec": _float(0.5, 0.1)}},
        "space.loss.alpha_rec",
        "empty",
    ),
    "no choices": (
        {"space": {"model.ratio": {"type": "categorical", "choices": []}}},
        "space.model.ratio.choices",
        "at least 1",
    ),
    "log with low 0": ({"space": {"optim_rec.lr": _float(0.0, 0.01, log=True)}}, "space.optim_rec.lr", "log"),
    "log with negative low": (
        {"space": {"model.comcnn.width": _int(-4, 16, log=True)}},
        "space.model.comcnn.width",
        "log",
    ),
    "float step with log": (
        {"space": {"optim_rec.lr": _float(1e-4, 1e-2, log=True, step=1e-4)}},
        "space.optim_rec.lr",
        "step and log",
    ),
    "int step with log": (
        {"space": {"model.comcnn.width": _int(8, 32, log=True, step=8)}},
        "space.model.comcnn.width",
        "step and log",
    ),
    "unknown param type": ({"space": {"model.ratio": {"type": "choice"}}}, "space.model.ratio", "tag"),
    "unknown param key": (
        {"space": {"model.ratio": _int(1, 2, scale=3)}},
        "space.model.ratio.scale",
        "Extra",
    ),
    "unknown space path": (
        {"space": {"model.comcnn.dept": _int(2, 4)}},
        "space.model.comcnn.dept",
        "did you mean 'model.comcnn.depth'",
    ),
    "value the config refuses": (
        {"space": {"model.comcnn.depth": _int(1, 4)}},
        "space.model.comcnn.depth = 1",
        "greater than or equal to 2",
    ),
    "categorical choice the config refuses": (
        {"space": {"training.gradient_mode": {"type": "categorical", "choices": ["identity", "magic"]}}},
        "space.training.gradient_mode = 'magic'",
        "training.gradient_mode",
    ),
    "fixed value the config refuses": (
        {"space": {"codec.quality": {"type": "fixed", "value": 101}}},
        "space.codec.quality = 101",
        "less than or equal to 100",
    ),
    "when names a later parameter": (
        {"space": {"model.reccnn.dropout": _float(0.0, 0.2, when={"switch.d": True}), "switch.d": SWITCH}},
        "space.model.reccnn.dropout.when",
        "'switch.d' is not a parameter declared before it",
    ),
    "when names an unknown parameter": (
        {"space": {"switch.d": SWITCH, "model.reccnn.dropout": _float(0.0, 0.2, when={"switch.x": True})}},
        "space.model.reccnn.dropout.when",
        "'switch.x'",
    ),
    "when value never taken": (
        {"space": {"switch.d": SWITCH, "model.reccnn.dropout": _float(0.0, 0.2, when={"switch.d": "yes"})}},
        "space.model.reccnn.dropout.when",
        "never takes ['yes']",
    ),
    "when value off the int grid": (
        {
            "space": {
                "model.comcnn.depth": _int(2, 8, step=2),
                "model.reccnn.dropout": _float(0.0, 0.2, when={"model.comcnn.depth": [4, 5]}),
            }
        },
        "space.model.reccnn.dropout.when",
        "never takes [5]",
    ),
    "when value outside the int range": (
        {
            "space": {
                "model.comcnn.depth": _int(2, 6),
                "model.reccnn.dropout": _float(0.0, 0.2, when={"model.comcnn.depth": 7}),
            }
        },
        "space.model.reccnn.dropout.when",
        "never takes [7]",
    ),
    "optuna pruner with a multi-objective study": (
        {"pruner": {"name": "median"}, "objective": {"mode": "multi"}},
        "pruner.name",
        "objective.mode = 'gain'",
    ),
    "hyperband with the default (multi) objective": (
        {"pruner": {"name": "hyperband"}},
        "pruner.name",
        "gain",
    ),
    "rate objective with the gain judge": ({"objective": {"mode": "rate"}}, "objective.mode", "judge"),
    "rate objective with the gain-halving pruner": (
        {"objective": {"mode": "rate"}, "pruner": {"name": "gain-halving"}, "base": {"training": RATE_JUDGE}},
        "pruner.name",
        "ranks trials by dev gain in dB",
    ),
    "judge searched under a single objective": (
        {
            "objective": {"mode": "gain"},
            "space": {"training.judge": {"type": "categorical", "choices": ["gain", "rate"]}},
        },
        "space.training.judge",
        "fixes it",
    ),
    "base config refused": ({"base": {"training": {"crop": 50}}}, "base", "multiple of 16"),
    "refine fidelity refused": ({"refine": {"crop": 40}}, "refine", "multiple of 16"),
    "a searched ratio the refine crop does not fit": (
        {"budget": {"crop": 96}, "refine": {"crop": 128}, "space": {"model.ratio": _categorical([2, 3])}},
        "space.model.ratio = 3 with [refine]",
        "training.crop = 128 is not a multiple of model.ratio = 3",
    ),
    "a searched ratio the search crop does not fit": (
        {"budget": {"crop": 64}, "space": {"model.ratio": _categorical([2, 3])}},
        "space.model.ratio = 3:",
        "training.crop = 64 is not a multiple of model.ratio = 3",
    ),
    "base config unknown key": ({"base": {"model": {"colour": 1}}}, "base", "model.colour"),
    "budget that makes the base refuse": ({"budget": {"crop": 40}}, "base", "crop"),
    "missing preset": ({"base_preset": "nope.toml"}, "base_preset", "not found"),
    "a budget no study needs": ({"budget": {"n_trials": 1_000_000_000}}, "budget.n_trials", "10000"),
    "an infinite loss weight": ({"base": {"loss": {"fidelity_weight": math.inf}}}, "base", "finite"),
    "a NaN range weight": ({"base": {"loss": {"range_weight": math.nan}}}, "base", "finite"),
    "an infinite space bound": ({"space": {"loss.rate_weight": _float(0.0, math.inf)}}, "space", "finite"),
}


@pytest.mark.parametrize("case", BAD_SPECS, ids=list(BAD_SPECS))
def test_bad_spec_raises_spec_error_starting_with_the_field(case: str, tmp_path: Path):
    data, path, detail = BAD_SPECS[case]
    with pytest.raises(SpecError) as info:
        validate_spec(copy.deepcopy(data), tmp_path)
    message = str(info.value)
    assert message.startswith(path), message
    assert detail in message, message
    assert isinstance(info.value, ConfigError)  # the CLI turns it into one line and exit code 2


GOOD_SPACES = {
    "when on an int value inside its range": {
        "model.comcnn.depth": _int(2, 8, step=2),
        "model.reccnn.dropout": _float(0.0, 0.2, when={"model.comcnn.depth": [4, 6]}),
    },
    "when on a float range": {
        "loss.alpha_rec": _float(0.0, 1.0),
        "model.reccnn.dropout": _float(0.0, 0.2, when={"loss.alpha_rec": 0.5}),
    },
    "when on a fixed entry": {
        "switch.x": {"type": "fixed", "value": "on"},
        "model.reccnn.dropout": _float(0.0, 0.2, when={"switch.x": "on"}),
    },
    "list element path": {"codec.quality_range.0": _int(5, 20), "codec.quality_range.1": _int(60, 95)},
    "int log with unit step": {"model.comcnn.width": _int(4, 64, log=True)},
    "optional field": {"training.time_budget_s": _float(10.0, 100.0)},
}


@pytest.mark.parametrize("case", GOOD_SPACES, ids=list(GOOD_SPACES))
def test_good_spaces_validate(case: str, tmp_path: Path):
    space = GOOD_SPACES[case]
    resolved = validate_spec({"space": copy.deepcopy(space)}, tmp_path)
    assert list(resolved.spec.space) == list(space)


def test_list_element_path_without_the_list_in_base(tmp_path: Path):
    """codec.quality_range is not in the base dict (a default): its elements are still settable paths."""
    resolved = validate_spec({"space": {"codec.quality_range.1": _int(50, 90)}}, tmp_path)
    assert resolved.base_config.codec.quality_range == (10, 95)
    with pytest.raises(SpecError, match=r"^space\.codec\.quality_range\.1 = 5: codec: .*quality_range"):
        validate_spec({"space": {"codec.quality_range.1": _int(5, 90)}}, tmp_path)  # high < low 10


def test_optuna_pruner_with_gain_objective_is_accepted(tmp_path: Path):
    resolved = validate_spec({"pruner": {"name": "median"}, "objective": {"mode": "gain"}}, tmp_path)
    assert resolved.spec.pruner.name == "median"


def test_switch_entries_need_no_config_field(tmp_path: Path):
    resolved = validate_spec({"space": {"switch.anything": SWITCH}}, tmp_path)
    assert "switch.anything" in resolved.spec.space
    with pytest.raises(SpecError, match=r"^space\.swich\.anything: not a TrainConfig field"):
        validate_spec({"space": {"swich.anything": SWITCH}}, tmp_path)


def test_preset_is_relative_to_the_spec_and_base_wins(tmp_path: Path):
    (tmp_path / "presets").mkdir()
    write_toml(tmp_path / "presets" / "p.toml", {"model": {"ratio": 4, "comcnn": {"width": 12}}})
    spec = write_toml(
        tmp_path / "spec.toml",
        {"base_preset": "presets/p.toml", "seed": 9, "base": {"model": {"comcnn": {"depth": 5}}}},
    )
    config = load_spec(spec).base_config
    assert (config.model.ratio, config.model.comcnn.width, config.model.comcnn.depth) == (4, 12, 5)
    assert config.seed == 9  # the spec's seed is the base config's


# ---- TOML files -------------------------------------------------------------------------------------------
def test_load_spec_from_toml(tmp_path: Path, image_folder: Path):
    resolved = load_spec(write_toml(tmp_path / "tiny.toml", tiny_spec(image_folder)))
    assert list(resolved.spec.space) == [
        "switch.dropout",
        "model.comcnn.width",
        "codec.quality",
        "model.reccnn.dropout",
    ]
    config = resolved.base_config
    assert config.data.train == str(image_folder) and config.data.dev_max_images == 2
    assert (config.training.epochs, config.training.steps_per_epoch, config.training.crop) == (1, 1, 48)
    assert config.seed == 5


@pytest.mark.parametrize("case", ["wrong type", "int range inverted", "when names a later parameter"])
def test_bad_toml_spec_names_the_field(case: str, tmp_path: Path):
    data, path, detail = BAD_SPECS[case]
    with pytest.raises(SpecError) as info:
        load_spec(write_toml(tmp_path / "bad.toml", data))
    assert str(info.value).startswith(path) and detail in str(info.value)


def test_unreadable_spec_files(tmp_path: Path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[budget\nn_trials = 3\n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(broken)


# ---- resolved specs: diff and JSON ------------------------------------------------------------------------
def test_spec_diff_lists_differing_fields(tmp_path: Path, image_folder: Path):
    data = tiny_spec(image_folder)
    stored = validate_spec(copy.deepcopy(data), tmp_path)
    assert spec_diff(stored, validate_spec(copy.deepcopy(data), tmp_path)) == []

    other = copy.deepcopy(data)
    other["budget"]["n_trials"] = 7
    other["budget"]["epochs"] = 2
    other["space"]["model.comcnn.width"]["choices"] = [8, 16]
    diff = spec_diff(stored, validate_spec(other, tmp_path))
    fields = sorted(line.split(": ", 1)[0] for line in diff)
    assert fields == [
        "base_config.training.epochs",
        "spec.budget.epochs",
        "spec.budget.n_trials",
        "spec.space.model.comcnn.width.choices",
    ]
    assert "spec.budget.n_trials: 2 -> 7" in diff


def test_spec_diff_reports_added_entries(tmp_path: Path):
    stored = validate_spec({}, tmp_path)
    given = validate_spec({"space": {"model.ratio": {"type": "categorical", "choices": [1, 2]}}}, tmp_path)
    diff = spec_diff(stored, given)
    assert any(line.startswith("spec.space.model.ratio.choices: '<absent>' -> [1, 2]") for line in diff), diff
    assert spec_diff(given, stored) and spec_diff(given, given) == []


def test_resolved_spec_json_round_trip_keeps_space_order(tmp_path: Path, image_folder: Path):
    data = tiny_spec(image_folder)
    # not alphabetical: a sorted space would put the conditional entry before its switch (and fail)
    data["space"] = {
        "switch.dropout": SWITCH,
        "optim_rec.lr": _float(1e-4, 1e-2, log=True),
        "model.reccnn.dropout": _float(0.05, 0.2, when={"switch.dropout": True}),
        "codec.quality": {"type": "fixed", "value": 50},
        "codec.quality_range.0": _int(10, 30, step=5),
    }
    resolved = validate_spec(data, tmp_path)
    text = resolved.to_json()
    assert list(json.loads(text)["spec"]["space"]) == list(data["space"])
    again = ResolvedSpec.from_json(text)
    assert list(again.spec.space) == list(data["space"])
    assert again == resolved
    assert spec_diff(resolved, again) == []
    assert again.to_json() == text
    assert again.spec.space["switch.dropout"].choices == [False, True]  # bools stay bools


# ---- the CLI: shrink study create, shrink worker --spec ---------------------------------------------------
def test_study_create_bad_spec_exits_2_one_line_and_no_database(tmp_path: Path, image_folder: Path, capsys):
    data = tiny_spec(image_folder)
    data["budget"]["n_trials"] = "ten"
    bad = write_toml(tmp_path / "bad.toml", data)
    db = tmp_path / "study.db"
    assert main(["study", "create", str(bad), "--storage", f"sqlite:///{db}"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("shrink study: error: budget.n_trials"), lines[0]
    assert "Traceback" not in captured.err
    assert not db.exists()


def test_study_create_then_duplicate_then_mismatched_worker(tmp_path: Path, image_folder: Path, capsys):
    spec_path = write_toml(tmp_path / "tiny.toml", tiny_spec(image_folder))
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"
    assert main(["study", "create", str(spec_path), "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "created study 'tiny'" in out and "4 space entries" in out and "2 trials" in out
    assert db.is_file()
    study = optuna.load_study(study_name="tiny", storage=url)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    assert ResolvedSpec.from_json(study.user_attrs["shrink_spec"]) == load_spec(spec_path)

    assert main(["study", "create", str(spec_path), "--storage", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("shrink study: error:") and "already exists" in err[-1], err

    other_path = write_toml(tmp_path / "other.toml", tiny_spec(image_folder, n_trials=3))
    args = ["worker", "--storage", url, "--study-name", "tiny", "--run-root", str(tmp_path / "runs")]
    assert main([*args, "--spec", str(other_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("shrink worker: error: spec differs"), err
    assert "budget.n_trials: 2 -> 3" in err[-1]
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert [t.state.name for t in trials] == ["WAITING"] * 2  # nothing ran: the budget's tickets wait
    assert not (tmp_path / "runs").exists()
