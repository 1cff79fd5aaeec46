"""Property: validating a spec dict either accepts it and the resolved spec round-trips through JSON, or
rejects it with a :class:`SpecError` whose message starts with a field path -- never any other exception.

The strategy mixes valid and invalid pieces: every top-level table (plus unknown keys), right and wrong
types and ranges, space entries of each type on real TrainConfig paths, switches and bad paths, inverted
ranges, ``when`` conditions on earlier, later and unknown entries, and preset paths that exist, are missing,
are folders or hold bad TOML. A spec is drawn "clean" (every piece valid), with one bad piece, or "wild"
(each piece bad with probability 1/3), so both outcomes occur often; the test asserts that they do.
"""

from __future__ import annotations

import copy
import math
import re
import string
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shrink.search.spec import (
    OPTUNA_PRUNERS,
    ResolvedSpec,
    SpecError,
    StudySpec,
    spec_diff,
    validate_spec,
)

SETTINGS = settings(
    max_examples=300,  # ~3 s
    deadline=None,
    database=None,  # no .hypothesis/ folder in the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---- the spec folder: presets the specs may name ----------------------------------------------------------
PRESETS = {
    "preset.toml": "[model]\nratio = 2\n[model.comcnn]\nwidth = 12\n",
    "bad.toml": "[model\nratio = 2\n",  # not TOML
    "wrong.toml": "[model]\ncolour = 1\n",  # TOML, but not a TrainConfig
}
GOOD_PRESETS = ["preset.toml", "./preset.toml"]
BAD_PRESETS = [
    "missing.toml",
    "../nowhere/preset.toml",
    "bad.toml",
    "wrong.toml",
    "binary.toml",  # not UTF-8
    "folder",  # a directory
    "",  # the spec folder itself
    "nul\x00.toml",  # TOML allows "\u0000" in a string
]


def spec_folder(root: Path) -> Path:
    for name, text in PRESETS.items():
        (root / name).write_text(text)
    (root / "binary.toml").write_bytes(b"\xff\xfe[model]\n")
    (root / "folder").mkdir(exist_ok=True)
    return root


# ---- scalars ----------------------------------------------------------------------------------------------
IDENT = st.text(string.ascii_lowercase + string.digits + "_-", min_size=1, max_size=8)
FINITE = st.floats(allow_nan=False, allow_infinity=False, width=64)
SCALARS = st.one_of(st.booleans(), st.integers(-1000, 1000), FINITE, IDENT, st.none())
WRONG = st.one_of(  # values of the wrong type for most fields
    st.just("x"), st.just([1, 2]), st.just({"a": 1}), st.just(1.5), st.none(), st.just(True)
)

# ---- space entries ----------------------------------------------------------------------------------------
# real TrainConfig paths: (kind, low, high, config low, config high) or ("categorical", valid choices)
REAL = {
    "model.comcnn.depth": ("int", 2, 12, 2, 64),
    "model.reccnn.depth": ("int", 2, 20, 2, 64),
    "model.comcnn.width": ("int", 4, 64, 4, 512),
    "codec.quality": ("int", 1, 100, 1, 100),
    "codec.quality_range.0": ("int", 1, 10, 1, 100),
    "codec.quality_range.1": ("int", 60, 100, 1, 100),
    "training.rec_warmup_epochs": ("int", 0, 3, 0, None),
    "loss.alpha_rec": ("float", 0.0, 1.0, 0.0, 1.0),
    "model.reccnn.dropout": ("float", 0.0, 0.5, 0.0, 1.0),
    "optim_rec.lr": ("float", 1e-5, 0.1, 0.0, 1.0),
    "training.time_budget_s": ("float", 1.0, 1e4, 0.0, None),
    "model.ratio": ("categorical", [1, 2, 4]),  # 3 needs a crop that is a multiple of 48 (test_spec.py)
    "training.gradient_mode": ("categorical", ["straight-through", "identity"]),
    "model.reccnn.norm": ("categorical", ["none", "batch"]),
}
SWITCHES = ["switch.a", "switch.b", "switch.dropout"]
BAD_NAMES = ["model.comcnn.dept", "bogus", "codec.quality_range.2", "model", "training", "swich.a", "switch"]
PARAM_MUTATIONS = [
    "invert",
    "type",
    "no type",
    "extra key",
    "log at or below zero",
    "step with log",
    "bad step",
    "wrong low",
    "empty choices",
    "outside the config",
    "infinite",
    "not a table",
    "bad log",
]


@st.composite
def valid_param(draw, name: str) -> dict:
    kind = REAL.get(name) or (draw(st.sampled_from(["int", "float", "categorical", "fixed"])),)
    if kind[0] == "int":
        lo, hi = (kind[1], kind[2]) if len(kind) > 1 else (-20, 20)
        low = draw(st.integers(lo, hi))
        entry = {"type": "int", "low": low, "high": draw(st.integers(low, hi))}
        extra = draw(st.sampled_from(["", "step", "log", "log false"]))
        if extra == "step":
            entry["step"] = draw(st.integers(1, 3))
        elif extra == "log" and low > 0:
            entry["log"] = True
        elif extra == "log false":
            entry["log"] = False
        return entry
    if kind[0] == "float":
        lo, hi = (kind[1], kind[2]) if len(kind) > 1 else (-10.0, 10.0)
        low = draw(st.floats(lo, hi))
        entry = {"type": "float", "low": low, "high": draw(st.floats(low, hi))}
        extra = draw(st.sampled_from(["", "step", "log"]))
        if extra == "step":
            entry["step"] = draw(st.sampled_from([0.01, 0.1, 0.25]))
        elif extra == "log" and low > 0:
            entry["log"] = True
        return entry
    values = kind[1] if len(kind) > 1 else None
    choice = st.sampled_from(values) if values else SCALARS
    if kind[0] == "fixed" or draw(st.integers(0, 4)) == 0:
        return {"type": "fixed", "value": draw(choice)}
    return {"type": "categorical", "choices": draw(st.lists(choice, min_size=1, max_size=3, unique=True))}


@st.composite
def corrupt_param(draw, name: str, entry: dict):
    entry = dict(entry)
    mutation = draw(st.sampled_from(PARAM_MUTATIONS))
    ranged = entry.get("type") in ("int", "float")
    if mutation == "invert" and ranged:
        entry["low"], entry["high"] = entry["high"] + 1, entry["low"]
    elif mutation == "type":
        entry["type"] = draw(st.sampled_from(["choice", "integer", "", 3, None]))
    elif mutation == "no type":
        entry.pop("type", None)
    elif mutation == "extra key":
        entry[draw(st.sampled_from(["scale", "default", "choice"]))] = 3
    elif mutation == "log at or below zero" and ranged:
        entry.update(log=True, low=draw(st.sampled_from([0, -4])))
        entry.pop("step", None)
    elif mutation == "step with log" and ranged:
        entry.update(log=True, step=2, low=1, high=max(2, entry["high"]))
    elif mutation == "bad step" and ranged:
        entry["step"] = draw(st.sampled_from([0, -1, "2"]))
    elif mutation == "wrong low" and ranged:
        entry["low"] = draw(WRONG)
    elif mutation == "empty choices" and entry.get("type") == "categorical":
        entry["choices"] = []
    elif mutation == "outside the config" and name in REAL and REAL[name][0] != "categorical":
        _, _, _, config_low, config_high = REAL[name]
        if config_high is not None and draw(st.booleans()):
            entry["high"] = config_high + (1 if entry["type"] == "int" else 0.5)
        else:
            entry["low"] = config_low - (1 if entry["type"] == "int" else 0.5)
        entry.pop("log", None)
    elif mutation == "infinite" and entry.get("type") == "float":
        entry["high"] = math.inf
    elif mutation == "not a table":
        return draw(st.sampled_from([5, "int", [1, 2]]))
    elif mutation == "bad log":
        entry["log"] = draw(st.sampled_from(["yes", 2, None]))
    else:  # the mutation does not apply to this entry: break it in the generic way
        entry["type"] = "choice"
    return entry


def taken_values(entry) -> list:
    """Values an entry certainly takes (what a valid ``when`` on it may name)."""
    if not isinstance(entry, dict):
        return [1]
    if entry.get("type") == "categorical":
        return list(entry.get("choices") or [1])
    if entry.get("type") == "fixed":
        return [entry.get("value")]
    return [entry.get("low")]


@st.composite
def space(draw, n: int, bad) -> dict:
    entries: dict = {}
    for index in range(n):
        broken = bad(f"space.{index}")
        pool = list(REAL) + SWITCHES + (BAD_NAMES if broken else [])
        name = draw(st.sampled_from(pool))
        if name in BAD_NAMES or (broken and draw(st.booleans())):
            entry = draw(valid_param(name))  # a bad name, or a good name with a broken entry
            if name not in BAD_NAMES:
                entry = draw(corrupt_param(name, entry))
        else:
            entry = draw(valid_param(name))
        earlier = [other for other in entries if other != name]
        if isinstance(entry, dict) and (earlier or broken) and draw(st.integers(0, 2)) == 0:  # a condition
            if earlier and not (broken and draw(st.booleans())):
                other = draw(st.sampled_from(earlier))
                value = draw(st.sampled_from(taken_values(entries[other])))
                entry["when"] = {other: value if draw(st.booleans()) else [value]}
            else:  # a later, unknown or never-taken condition
                entry["when"] = {
                    draw(st.sampled_from([*SWITCHES, "switch.nope", name])): draw(
                        st.one_of(SCALARS, st.just({"a": 1}))
                    )
                }
        entries[name] = entry
    return entries


# ---- the other tables -------------------------------------------------------------------------------------
@st.composite
def table(draw, fields: dict, bad_fields: dict, broken: bool):
    """A subset of ``fields`` (name -> strategy), with one ``bad_fields`` entry when broken."""
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=len(fields)))
    result = {key: draw(fields[key]) for key in chosen}
    if broken:
        key = draw(st.sampled_from(sorted(bad_fields)))
        if key == "<not a table>":
            return draw(bad_fields[key])
        result[key] = draw(bad_fields[key])
    return result


BUDGET = {
    "n_trials": st.integers(1, 50),
    "epochs": st.integers(1, 5),
    "steps_per_epoch": st.integers(1, 10),
    "crop": st.sampled_from([16, 32, 48, 128]),
    "batch_size": st.integers(1, 8),
    "trial_time_s": st.floats(0.1, 1e4),
}
BAD_BUDGET = {
    "n_trials": st.sampled_from([0, -3, "ten", 2.5]),
    "epochs": st.sampled_from([0, "one"]),
    "crop": st.sampled_from([8, 40, 50]),  # below 16, or not a multiple of 16 (the base config refuses it)
    "trial_time_s": st.sampled_from([0, -1.0, "fast"]),
    "n_trial": st.just(3),
    "<not a table>": st.sampled_from([5, "budget", [1]]),
}
DATA = {
    "train": st.sampled_from(["samples:train", "images/train", "/tmp/x"]),
    "dev": st.sampled_from(["samples:dev", "images/dev"]),
    "dev_max_images": st.integers(1, 8),
}
BAD_DATA = {
    "dev_max_images": st.sampled_from([0, "all"]),
    "train": st.sampled_from([5, ["a"]]),
    "folder": st.just("x"),
    "<not a table>": st.sampled_from([[1], "data"]),
}
PRUNER_NAMES = ["none", "gain-halving", "pareto-halving", "median", "successive-halving", "hyperband"]
PRUNER = {
    "name": st.sampled_from(PRUNER_NAMES),
    "min_epochs": st.integers(1, 3),
    "reduction_factor": st.integers(2, 4),
    "min_peers": st.integers(1, 4),
    "rate_tolerance": st.floats(0.0, 0.5),
}
BAD_PRUNER = {
    "name": st.sampled_from(["asha", "", 3]),
    "min_epochs": st.just(0),
    "reduction_factor": st.just(1),
    "rate_tolerance": st.just(-0.1),
    "patience": st.just(2),
    "<not a table>": st.just("median"),
}
SAMPLER = {"name": st.sampled_from(["tpe", "random", "nsga2", "gp"]), "n_startup_trials": st.integers(0, 10)}
BAD_SAMPLER = {
    "name": st.sampled_from(["cmaes", None]),
    "n_startup_trials": st.sampled_from([-1, "5"]),
    "seed": st.just(1),
}
OBJECTIVE = {"mode": st.sampled_from(["multi", "gain"])}
BAD_OBJECTIVE = {"mode": st.sampled_from(["single", 1, None]), "modes": st.just("multi")}
BASE = {
    "model": st.sampled_from([{"comcnn": {"depth": 4}}, {"ratio": 4}, {"reccnn": {"width": 16, "depth": 5}}]),
    "training": st.sampled_from([{"rec_warmup_epochs": 0}, {"epochs": 2}]),
    "device": st.just({"threads": 1}),
    "codec": st.just({"threads": 1, "quality_range": [20, 80]}),
}
BAD_BASE = {
    "model": st.sampled_from([{"colour": 1}, {"ratio": 5}, [], 3]),
    "training": st.sampled_from([{"crop": 50}, 5, ["epochs"]]),  # a scalar or list where a table belongs
    "data": st.sampled_from(["x", 7, {"dev_qualities": []}]),
    "codec": st.just({"quality_range": [90, 10]}),
    "colour": st.just(1),
    "<not a table>": st.sampled_from([5, "base", [1]]),
}
# a spec with "one bad piece" breaks one of these (the preset and the base twice as often: most code paths)
TARGETS = ["name", "seed", "base_preset", "base_preset", "base", "base", "data", "budget", "objective"]
TARGETS += ["pruner", "sampler", "extra"]


@st.composite
def spec_dicts(draw) -> dict:
    flavour = draw(st.sampled_from(["clean", "clean", "one bad piece", "wild"]))
    n_space = draw(st.integers(0, 5))
    target = draw(st.sampled_from(TARGETS + [f"space.{i}" for i in range(n_space)]))
    event(f"flavour: {flavour}")

    def bad(where: str) -> bool:
        if flavour == "clean":
            return False
        if flavour == "one bad piece":
            return where == target
        return draw(st.integers(0, 2)) == 0

    data: dict = {}
    if bad("name"):
        data["name"] = draw(st.sampled_from(["", 5, None]))
    elif draw(st.booleans()):
        data["name"] = draw(IDENT)
    if bad("seed"):
        data["seed"] = draw(st.sampled_from(["0", 1.5, [0]]))
    elif draw(st.booleans()):
        data["seed"] = draw(st.integers(-(2**40), 2**40))
    if bad("base_preset"):
        data["base_preset"] = draw(st.sampled_from(BAD_PRESETS))
    elif draw(st.integers(0, 3)) == 0:
        data["base_preset"] = draw(st.sampled_from(GOOD_PRESETS))
    sections = (
        ("base", BASE, BAD_BASE),
        ("data", DATA, BAD_DATA),
        ("budget", BUDGET, BAD_BUDGET),
        ("objective", OBJECTIVE, BAD_OBJECTIVE),
        ("pruner", PRUNER, BAD_PRUNER),
        ("sampler", SAMPLER, BAD_SAMPLER),
    )
    for key, fields, bad_fields in sections:
        broken = bad(key)
        if broken or draw(st.booleans()):
            data[key] = draw(table(fields, bad_fields, broken))
    if flavour == "clean" and data.get("pruner", {}).get("name") in OPTUNA_PRUNERS:
        data["objective"] = {"mode": "gain"}  # Optuna's pruners need the single objective
    if n_space or draw(st.booleans()):
        data["space"] = draw(space(n_space, bad))
    if bad("extra"):
        data[draw(st.sampled_from(["bogus", "spaces", "n_trials", "Budget"]))] = draw(SCALARS)
    return data


# ---- the property -----------------------------------------------------------------------------------------
SEPARATOR = re.compile(r": | = ")
TOP_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def assert_starts_with_field_path(message: str, data: dict) -> None:
    """``path: detail`` or ``path = value: detail``, the path naming a spec field or a key of the input."""
    match = SEPARATOR.search(message)
    assert match, f"no field path in {message!r}"
    path = message[: match.start()]
    top, _, rest = path.partition(".")
    assert TOP_KEY.fullmatch(top), f"{top!r} is not a field name ({message!r})"
    assert top in StudySpec.model_fields or top in data, f"{top!r} names no field ({message!r})"
    if top == "space" and rest:
        names = data.get("space") if isinstance(data.get("space"), dict) else {}
        assert any(rest == name or rest.startswith(name + ".") for name in names), (
            f"{rest!r} starts with no space entry of {list(names)} ({message!r})"
        )


def check(data: dict, folder: Path) -> str:
    """Validate; 'accepted' after checking the round trip, 'rejected' after checking the message."""
    given = copy.deepcopy(data)
    try:
        resolved = validate_spec(given, folder)
    except SpecError as error:
        assert_starts_with_field_path(str(error), data)
        return "rejected"
    finally:
        assert given == data, "validate_spec changed its input"
    text = resolved.to_json()
    again = ResolvedSpec.from_json(text)
    assert again.to_dict() == resolved.to_dict()
    assert spec_diff(resolved, again) == []
    assert again.to_json() == text
    return "accepted"


def test_spec_validation_accepts_and_round_trips_or_rejects_with_a_field_path(tmp_path: Path):
    folder = spec_folder(tmp_path)
    outcomes: Counter = Counter()

    @SETTINGS
    @given(spec_dicts())
    def property_holds(data: dict) -> None:
        outcome = check(data, folder)
        event(outcome)
        outcomes[outcome] += 1

    property_holds()
    # hypothesis replays failing examples while shrinking, so count only what a passing run saw
    assert outcomes["accepted"] >= 20 and outcomes["rejected"] >= 20, dict(outcomes)


# ---- found by the property (kept as plain examples) -------------------------------------------------------
EDGE_CASES = {
    "base table is a scalar where [data] adds keys": {"base": {"data": 5}, "data": {"train": "x"}},
    "base table is a list where [budget] adds keys": {"base": {"training": []}, "budget": {"epochs": 2}},
    "base_preset names a folder": {"base_preset": "folder"},
    "base_preset is empty": {"base_preset": ""},
    "base_preset is not UTF-8": {"base_preset": "binary.toml"},
    "base_preset holds a NUL": {"base_preset": "nul\x00.toml"},
    "NaN among a switch's choices": {"space": {"switch.a": {"type": "categorical", "choices": [math.nan]}}},
}


@pytest.mark.parametrize("case", EDGE_CASES, ids=list(EDGE_CASES))
def test_edge_cases(case: str, tmp_path: Path):
    data = EDGE_CASES[case]
    if case.startswith("NaN"):  # NaN != NaN: the round trip compares by its JSON text instead
        try:
            resolved = validate_spec(copy.deepcopy(data), tmp_path)
        except SpecError as error:
            assert_starts_with_field_path(str(error), data)
            return
        assert spec_diff(resolved, ResolvedSpec.from_json(resolved.to_json())) == [], "a NaN spec differs"
        return
    check(data, spec_folder(tmp_path))
