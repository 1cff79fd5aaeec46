"""Search spaces: spec entries -> Optuna distributions -> sampled params -> a TrainConfig.

Parameter names are the dotted TrainConfig paths themselves (``model.comcnn.depth``), so ``optuna trials``
and optuna-dashboard show readable params and a trial's config is the base config with its params set.
Conditional entries (``when``) are sampled only when their conditions hold; ``switch.*`` entries gate
others and set nothing.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

from shrink.compression.config import TrainConfig

from .spec import (
    SWITCH_PREFIX,
    CategoricalParam,
    FixedParam,
    FloatParam,
    IntParam,
    ResolvedSpec,
    SpecError,
    set_path,
    validate_config,
)


def distribution(param) -> BaseDistribution | None:
    """The Optuna distribution of one entry; ``None`` for fixed entries (they are not sampled)."""
    if isinstance(param, IntParam):
        return IntDistribution(param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, FloatParam):
        return FloatDistribution(param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, CategoricalParam):
        return CategoricalDistribution(param.choices)
    return None


def distributions(spec: ResolvedSpec) -> dict[str, BaseDistribution]:
    """Every sampled entry, conditional ones included (``optuna ask --search-space`` samples them all)."""
    out = {}
    for name, param in spec.spec.space.items():
        dist = distribution(param)
        if dist is not None:
            out[name] = dist
    return out


def search_space_json(spec: ResolvedSpec) -> str:
    """The JSON ``optuna ask --search-space`` takes."""
    return json.dumps({name: json.loads(distribution_to_json(d)) for name, d in distributions(spec).items()})


def active_params(spec: ResolvedSpec, lookup) -> dict[str, Any]:
    """Walk the space in order; ``lookup(name, dist)`` gives each active sampled value."""
    values: dict[str, Any] = {}
    for name, param in spec.spec.space.items():
        conditions = param.when or {}
        if any(other not in values or values[other] not in param.allowed(other) for other in conditions):
            continue
        values[name] = param.value if isinstance(param, FixedParam) else lookup(name, distribution(param))
    return values


def suggest(trial: optuna.Trial, spec: ResolvedSpec) -> dict[str, Any]:
    """Sample the active params of ``trial`` (Optuna records them as the trial's params)."""

    def lookup(name: str, dist: BaseDistribution) -> Any:
        if isinstance(dist, IntDistribution):
            return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        if isinstance(dist, FloatDistribution):
            return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
        return trial.suggest_categorical(name, dist.choices)

    return active_params(spec, lookup)


def params_from_trial(spec: ResolvedSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """The active params of an already-sampled trial (e.g. asked by ``optuna ask``)."""

    def lookup(name: str, dist: BaseDistribution) -> Any:
        if name not in params:
            raise SpecError(f"trial has no value for space entry {name!r}; was it asked with this spec?")
        return params[name]

    return active_params(spec, lookup)


def config_for(spec: ResolvedSpec, params: Mapping[str, Any]) -> TrainConfig:
    """The base config with ``params`` set; a combination the config refuses raises :class:`SpecError`."""
    data = copy.deepcopy(spec.base_config.model_dump(mode="json"))
    for name, value in params.items():
        if not name.startswith(SWITCH_PREFIX):
            set_path(data, name, value)
    config = validate_config(data, f"trial params = {dict(params)!r}")
    return _with_operating_point(config)


def _with_operating_point(config: TrainConfig) -> TrainConfig:
    """A fixed-quality model is judged at its quality only: its dev set is evaluated there."""
    if config.codec.quality is None:
        return config
    data = config.model_dump(mode="json")
    data["data"]["dev_qualities"] = [config.codec.quality]
    return TrainConfig.model_validate(data)
