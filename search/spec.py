"""Study specs: one TOML file -> a validated :class:`StudySpec` -> a TrainConfig per trial.

A spec names a base training config (a preset file and/or an inline ``[base]`` table), the data, the
per-trial budget, the search space over dotted TrainConfig paths, the objective, the pruner and the sampler.
Everything is validated before any storage is touched: a bad spec raises :class:`SpecError` naming the field
path (e.g. ``space.model.comcnn.depth.low``), and nothing is created.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shrink.compression.config import (
    SAMPLES_PREFIX,
    ConfigError,
    TrainConfig,
    apply_overrides,
    format_validation_error,
    read_toml,
    resolve_paths,
)

SWITCH_PREFIX = "switch."  # space entries that only gate others (``when``) and set no config field
Choice = str | int | float | bool | None
OPTUNA_PRUNERS = ("median", "successive-halving", "hyperband")
OBJECTIVE_MODES = {  # objective.mode -> the study's directions and metric names (before the decoder cost)
    "multi": (["minimize", "maximize"], ["dev_bpp", "dev_msssim"]),
    "gain": (["maximize"], ["dev_gain_db"]),
    "rate": (["minimize"], ["dev_rate_change"]),
}
DECODER_COST_METRIC = "decoder_macs_per_pixel"  # the metric name of decoder_cost = "objective"


class SpecError(ConfigError):
    """A study spec that does not validate; the message starts with the field path."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # every number finite


class _Param(Strict):
    when: dict[str, Choice | list[Choice]] | None = Field(
        None, description="only sampled when every named earlier parameter takes one of these values"
    )

    def allowed(self, name: str) -> list[Choice]:
        values = (self.when or {})[name]
        return values if isinstance(values, list) else [values]


class IntParam(_Param):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _valid_range(self) -> IntParam:
        _check_range(self.low, self.high, self.log, self.step if self.step != 1 else None)
        return self

    def values_to_check(self) -> list[Any]:
        return [self.low, self.high]

    def takes(self, value: Any) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )


class FloatParam(_Param):
    type: Literal["float"]
    low: float
    high: float
    step: float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _valid_range(self) -> FloatParam:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite")
        _check_range(self.low, self.high, self.log, self.step)
        return self

    def values_to_check(self) -> list[Any]:
        return [self.low, self.high]

    def takes(self, value: Any) -> bool:
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high
        )


class CategoricalParam(_Param):
    type: Literal["categorical"]
    choices: list[Choice] = Field(min_length=1)

    def values_to_check(self) -> list[Any]:
        return list(self.choices)

    def takes(self, value: Any) -> bool:
        return value in self.choices


class FixedParam(_Param):
    type: Literal["fixed"]
    value: Any

    def values_to_check(self) -> list[Any]:
        return [self.value]

    def takes(self, value: Any) -> bool:
        return value == self.value


Param = Annotated[IntParam | FloatParam | CategoricalParam | FixedParam, Field(discriminator="type")]
PARAM_TYPES = ("int", "float", "categorical", "fixed")


def _check_range(low, high, log: bool, step) -> None:
    if low > high:
        raise ValueError(f"empty range: low ({low}) > high ({high})")
    if log and low <= 0:
        raise ValueError(f"log scale needs low > 0, got {low}")
    if log and step is not None:
        raise ValueError("step and log cannot be used together")


class DataSpec(Strict):
    train: str | None = Field(None, description="image folder or samples:train; default: the base config's")
    dev: str | None = None
    dev_max_images: int | None = Field(None, ge=1)


class FidelitySpec(Strict):
    """How long and on what a trial trains; unset fields keep the base config's."""

    epochs: int | None = Field(None, ge=1, description="epochs per trial (default: the base config's)")
    steps_per_epoch: int | None = Field(None, ge=1)
    crop: int | None = Field(None, ge=16)
    batch_size: int | None = Field(None, ge=1)
    trial_time_s: float | None = Field(None, gt=0, description="per-trial time budget")

    def training_fields(self) -> dict[str, Any]:
        """The TrainingConfig fields this fidelity sets (``trial_time_s`` is ``time_budget_s``)."""
        fields = self.model_dump(exclude_none=True, exclude={"n_trials"})
        if "trial_time_s" in fields:
            fields["time_budget_s"] = fields.pop("trial_time_s")
        return fields


# No real study comes near (they run 12..200 trials); its tickets are issued in one transaction (~20 s on
# SQLite), where a typo's 10**9 would hold the database for days.
MAX_TRIALS = 10_000


class BudgetSpec(FidelitySpec):
    """[budget]: the search's trials (low fidelity) and how many."""

    n_trials: int = Field(
        12, ge=1, le=MAX_TRIALS, description="the study is done when this many trials finished"
    )


class RefineSpec(FidelitySpec):
    """[refine]: the full fidelity ``shrink refine`` retrains chosen trials at; unset fields keep
    [budget]'s."""


class HoldoutSpec(Strict):
    """[test]: a held-out image folder, never used for selection; each refined trial is evaluated on it once
    (full images, real files) and its curve stored with the trial."""

    data: str | None = Field(None, description="test image folder (relative to the spec file)")
    qualities: list[int] = Field(
        default_factory=lambda: list(range(5, 100, 5)), description="codec qualities of the test curve"
    )

    @model_validator(mode="after")
    def _qualities_valid(self) -> HoldoutSpec:
        if not self.qualities or any(not 1 <= q <= 100 for q in self.qualities):
            raise ValueError(f"test.qualities must be a non-empty list in 1..100, got {self.qualities}")
        return self


class ObjectiveSpec(Strict):
    mode: Literal["multi", "gain", "rate"] = Field(
        "multi",
        description="multi: minimise dev bpp, maximise dev MS-SSIM; gain: maximise dB over JPEG at matched "
        "bpp; rate: minimise the rate against JPEG at matched MS-SSIM (a dev BD-rate; needs training.judge = "
        "'rate')",
    )
    decoder_cost: Literal["ignore", "constraint", "objective"] = Field(
        "ignore",
        description="the decoder's MACs per output pixel (shrink.compression.cost): 'ignore' records it "
        "only; 'constraint' prunes trials over max_decoder_macs_per_pixel before training; 'objective' also "
        "minimises it (one more study direction)",
    )
    max_decoder_macs_per_pixel: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="trials whose decoder costs more are pruned before training ('constraint', or "
        "'objective' with a limit)",
    )

    @property
    def directions_and_names(self) -> tuple[list[str], list[str]]:
        """The study's directions and metric names: the mode's, then the decoder cost's when an objective."""
        directions, names = OBJECTIVE_MODES[self.mode]
        if self.decoder_cost == "objective":
            return [*directions, "minimize"], [*names, DECODER_COST_METRIC]
        return list(directions), list(names)

    @property
    def single(self) -> bool:
        return len(self.directions_and_names[0]) == 1


class PrunerSpec(Strict):
    name: Literal["none", "gain-halving", "pareto-halving", "median", "successive-halving", "hyperband"] = (
        "pareto-halving"
    )
    min_epochs: int = Field(1, ge=1, description="first rung (epochs)")
    reduction_factor: int = Field(3, ge=2)
    min_peers: int = Field(3, ge=1, description="trials needed at a rung before anything is pruned")
    rate_tolerance: float = Field(
        0.0, ge=0.0, description="pareto-halving: a trial within this bpp factor and better dominates"
    )


class SamplerSpec(Strict):
    name: Literal["tpe", "random", "nsga2", "gp"] = "tpe"
    n_startup_trials: int = Field(5, ge=0, description="random trials before TPE / GP model the space")


class StudySpec(Strict):
    name: str = Field("shrink", min_length=1, description="default study name")
    seed: int = 0
    base_preset: str | None = Field(None, description="TOML preset, relative to the spec file")
    base: dict[str, Any] = Field(default_factory=dict, description="TrainConfig values over the preset")
    data: DataSpec = DataSpec()
    budget: BudgetSpec = BudgetSpec()
    refine: RefineSpec = RefineSpec()
    test: HoldoutSpec = HoldoutSpec()
    objective: ObjectiveSpec = ObjectiveSpec()
    pruner: PrunerSpec = PrunerSpec()
    sampler: SamplerSpec = SamplerSpec()
    space: dict[str, Param] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _pruner_fits_objective(self) -> StudySpec:
        if self.pruner.name in OPTUNA_PRUNERS and self.objective.mode == "multi":
            raise ValueError(
                f"pruner.name = {self.pruner.name!r} is one of Optuna's single-objective pruners; it needs "
                "objective.mode = 'gain' or 'rate' (multi-objective studies use 'gain-halving' or "
                "'pareto-halving')"
            )
        if self.pruner.name == "gain-halving" and self.objective.mode == "rate":
            raise ValueError(
                "pruner.name = 'gain-halving' ranks trials by dev gain in dB, not by the objective.mode = "
                "'rate' it judges by (use 'median', 'successive-halving', 'hyperband' or 'pareto-halving')"
            )
        if self.pruner.name in OPTUNA_PRUNERS and not self.objective.single:
            raise ValueError(
                f"pruner.name = {self.pruner.name!r} is one of Optuna's single-objective pruners; "
                "objective.decoder_cost = 'objective' makes the study multi-objective (use 'gain-halving' or "
                "'pareto-halving')"
            )
        return self

    @model_validator(mode="after")
    def _decoder_limit_fits_its_mode(self) -> StudySpec:
        objective = self.objective
        if objective.decoder_cost == "constraint" and objective.max_decoder_macs_per_pixel is None:
            raise ValueError(
                "objective.max_decoder_macs_per_pixel: needed when objective.decoder_cost = 'constraint'"
            )
        if objective.decoder_cost == "ignore" and objective.max_decoder_macs_per_pixel is not None:
            raise ValueError(
                "objective.max_decoder_macs_per_pixel: ignored unless objective.decoder_cost is 'constraint' "
                "or 'objective'"
            )
        return self

    @model_validator(mode="after")
    def _conditions_refer_backwards(self) -> StudySpec:
        seen: dict[str, Any] = {}
        for name, param in self.space.items():
            for other in param.when or {}:
                if other not in seen:
                    raise ValueError(f"space.{name}.when: {other!r} is not a parameter declared before it")
                bad = [value for value in param.allowed(other) if not seen[other].takes(value)]
                if bad:
                    raise ValueError(f"space.{name}.when: {other} never takes {bad}")
            seen[name] = param
        return self

    # ---- the resolved base config ---------------------------------------------------------------------
    def base_dict(self, resolved_preset: dict[str, Any] | None = None) -> dict[str, Any]:
        """Preset ⊕ [base] ⊕ [data] ⊕ [budget], as a TrainConfig dict (not yet validated)."""
        data = copy.deepcopy(resolved_preset or {})
        _deep_merge(data, self.base)
        for table in ("data", "training"):
            if not isinstance(data.setdefault(table, {}), dict):
                raise SpecError(f"base.{table}: must be a table, got {data[table]!r}")
        for key, value in self.data.model_dump(exclude_none=True).items():
            data.setdefault("data", {})[key] = value
        data.setdefault("training", {}).update(self.budget.training_fields())
        data["seed"] = self.seed
        return data


class ResolvedSpec(BaseModel):
    """A spec plus its fully resolved base config: what a study stores and what workers compare."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    spec: StudySpec
    base_config: TrainConfig

    def to_json(self) -> str:
        return json.dumps(self.to_dict())  # key order kept: ``when`` refers to earlier space entries

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.model_dump(mode="json"),
            "base_config": self.base_config.model_dump(mode="json"),
        }

    @classmethod
    def from_json(cls, text: str) -> ResolvedSpec:
        data = json.loads(text)
        return cls(
            spec=StudySpec.model_validate(data["spec"]),
            base_config=TrainConfig.model_validate(data["base_config"]),
        )


def _deep_merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` (or ``codec.quality_range.0``: a list element) in a nested dict, creating tables."""
    keys = dotted.split(".")
    node: Any = data
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def _config_paths(config: TrainConfig) -> set[str]:
    paths: set[str] = set()

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{prefix}{index}.")
        paths.add(prefix.rstrip("."))

    walk(config.model_dump(mode="json"), "")
    return paths


def validate_spec(data: dict[str, Any], spec_dir: Path) -> ResolvedSpec:
    """Validate a spec dict: its own fields, the base config, and every space entry against TrainConfig.

    Relative folders (``data.train``/``data.dev``, in ``[data]`` and ``[base.data]``) resolve against
    ``spec_dir`` and a preset's against the preset's folder, so the stored spec names absolute folders.
    """
    data = resolve_spec_paths(copy.deepcopy(data), spec_dir)
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(_format_spec_error(error)) from None
    preset = _load_preset(spec, spec_dir)
    base_data = spec.base_dict(preset)
    base_config = validate_config(base_data, "base")
    _check_judge_fits_objective(spec, base_config)
    base_json = base_config.model_dump(mode="json")  # every field present: list paths can be set
    refine_json = copy.deepcopy(base_json)  # what `shrink refine` trains: [refine] over the search's [budget]
    refine_json["training"].update(spec.refine.training_fields())
    validate_config(refine_json, "refine")
    paths = _config_paths(base_config)
    for name, param in spec.space.items():
        if name.startswith(SWITCH_PREFIX):
            continue
        if name not in paths:
            close = difflib.get_close_matches(name, sorted(paths), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpecError(f"space.{name}: not a TrainConfig field{hint}")
        for value in param.values_to_check():
            for fidelity, where in ((base_json, ""), (refine_json, " with [refine]")):
                trial_data = copy.deepcopy(fidelity)
                set_path(trial_data, name, value)
                validate_config(trial_data, f"space.{name} = {value!r}{where}")
    return ResolvedSpec(spec=spec, base_config=base_config)


def _check_judge_fits_objective(spec: StudySpec, base_config: TrainConfig) -> None:
    """A single-objective trial reports the epoch its checkpoint holds, and the trainer picks that epoch by
    ``training.judge``: the two must be the same number."""
    mode = spec.objective.mode
    if mode == "multi":
        return
    if "training.judge" in spec.space:
        raise SpecError(f"space.training.judge: objective.mode = {mode!r} fixes it to {mode!r}")
    if base_config.training.judge != mode:
        raise SpecError(
            f"objective.mode = {mode!r} needs training.judge = {mode!r} (set it in [base.training]), so the "
            f"epoch a trial keeps is the one its value reports; it is {base_config.training.judge!r}"
        )


def _format_spec_error(error: ValidationError) -> str:
    """Like ``format_validation_error``, but the message starts with the field path: errors raised by the
    spec's own validators carry their path in the message, and a space entry's ``type`` tag is dropped."""
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"]]
    if len(loc) > 2 and loc[0] == "space" and loc[2] in PARAM_TYPES:
        del loc[2]
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{'.'.join(loc)}: {message}{more}" if loc else f"{message}{more}"


def _load_preset(spec: StudySpec, spec_dir: Path) -> dict[str, Any]:
    if spec.base_preset is None:
        return {}
    preset = spec_dir / spec.base_preset
    try:
        return resolve_paths(read_toml(preset, "preset"), preset.parent)
    except ConfigError as error:
        raise SpecError(f"base_preset: {error}") from None


def validate_config(data: dict[str, Any], where: str) -> TrainConfig:
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as error:
        raise SpecError(f"{where}: {format_validation_error(error)}") from None


def load_spec(path: str | Path, overrides: list[str] | None = None) -> ResolvedSpec:
    """Load and validate; ``overrides`` (``pruner.name=none``) apply first, as in ``shrink train --set``.

    Folders written in the file resolve against the file's folder, folders given in ``overrides`` against
    the working directory (the command line's convention).
    """
    path = Path(path)
    try:
        data = resolve_spec_paths(read_toml(path, "spec"), path.parent)
        data = resolve_spec_paths(apply_overrides(data, overrides or []), Path.cwd())
    except ConfigError as error:
        raise SpecError(str(error)) from None
    return validate_spec(data, path.parent)


def resolve_spec_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """The spec dict's relative folders in ``[data]`` and ``[base.data]`` made absolute against ``base``, in
    place (:func:`~shrink.compression.config.resolve_paths`: sample sets and absolute paths are kept)."""
    resolve_paths(data, base)  # [data] names its folders as TrainConfig's data table does
    if isinstance(data.get("base"), dict):
        resolve_paths(data["base"], base)
    test = data.get("test")
    folder = test.get("data") if isinstance(test, dict) else None
    if isinstance(folder, str) and folder and not folder.startswith(SAMPLES_PREFIX):
        test["data"] = os.path.normpath(base.absolute() / Path(folder).expanduser())
    return data


def spec_diff(stored: ResolvedSpec, given: ResolvedSpec) -> list[str]:
    """Readable lines, one per differing leaf: ``path: stored -> given``."""
    left, right = _flatten(stored.to_dict()), _flatten(given.to_dict())
    # compared as JSON text: a NaN choice equals itself once stored
    same = lambda key: json.dumps(left.get(key, "<absent>")) == json.dumps(right.get(key, "<absent>"))  # noqa: E731
    return [
        f"{key}: {left.get(key, '<absent>')!r} -> {right.get(key, '<absent>')!r}"
        for key in sorted(set(left) | set(right))
        if not same(key)
    ]


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}
