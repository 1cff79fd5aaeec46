"""Refine: retrain chosen trials of a search at full fidelity, as a child study, and test them once.

``shrink refine`` creates a child study (default name ``<parent>-refine``) whose spec is the parent's with
``[budget]`` replaced by ``[refine]`` (multi-fidelity made explicit: the search's short trials, the refined
long ones) and ``n_trials`` = the chosen trials. Each ticket carries one chosen trial's params, fixed
(Optuna's ``enqueue_trial`` mechanism), and names its parent trial, so the same workers, ``shrink launch``,
pruning, heartbeat, retry and resume run it. A refined trial that completes is evaluated once on
``[test].data`` by the trial runner (:func:`measure_test_curve`), and its curve stored with the trial.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import spearmanr

from shrink.compression.bundle import load_model
from shrink.compression.codecs import build_codec
from shrink.compression.data import load_images
from shrink.compression.evaluate import evaluate
from shrink.compression.rd import RDCurve

from .export import chosen_trials
from .records import (
    PARENT_STUDY_ATTR,
    PARENT_TRIAL_ATTR,
    PARENT_VALUES_ATTR,
    SEARCH_FIDELITY_ATTR,
    ParentValues,
    read_parent_values,
    stored_rd_point,
)
from .space import config_for
from .spec import ResolvedSpec, SpecError, StudySpec, validate_config
from .study import StudyHandle, create, stored_spec


def refine_spec(spec: ResolvedSpec, n_trials: int, trial_time_s: float | None = None) -> ResolvedSpec:
    """The parent's spec with ``[budget]`` = ``[refine]`` over it (``trial_time_s`` over both), for
    ``n_trials`` trials; the base config's training fields follow."""
    refine = spec.spec.refine.model_dump(exclude_none=True)
    if trial_time_s is not None:
        refine["trial_time_s"] = trial_time_s
    data = spec.spec.model_dump(mode="json")
    data["budget"] = {**data["budget"], **refine, "n_trials": n_trials}
    new_spec = StudySpec.model_validate(data)
    base = spec.base_config.model_dump(mode="json")
    base["training"].update(new_spec.budget.training_fields())
    return ResolvedSpec(spec=new_spec, base_config=validate_config(base, "refine"))


FIDELITY_FIELDS = ("epochs", "steps_per_epoch", "crop", "batch_size", "time_budget_s")


def fidelity(spec: ResolvedSpec) -> dict[str, Any]:
    """What a spec's trials train for: the base config's training fields that [budget] / [refine] set."""
    training = spec.base_config.training
    return {name: getattr(training, name) for name in FIDELITY_FIELDS}


def ticket_for(parent: optuna.Study, trial: FrozenTrial) -> tuple[dict, dict]:
    """A refine ticket: the trial's params, fixed, and where it comes from."""
    parent_values = ParentValues(values=trial.values, dev_gain_db=stored_rd_point(trial).get("dev_gain_db"))
    return dict(trial.params), {
        PARENT_STUDY_ATTR: parent.study_name,
        PARENT_TRIAL_ATTR: trial.number,
        PARENT_VALUES_ATTR: parent_values.model_dump(),
    }


def spread_over_rate(trials: Sequence[FrozenTrial], n: int) -> list[FrozenTrial]:
    """At most ``n`` of ``trials``, evenly spaced in the order of their dev rate (so the lowest and highest
    rates are kept and a family still spans the front); ``n == 1``: the highest dev gain. In trial order."""
    if n < 1:
        raise ValueError(f"the number of trials to refine must be at least 1, got {n}")
    if n >= len(trials):
        return list(trials)
    if n == 1:
        return [max(trials, key=lambda trial: stored_rd_point(trial).get("dev_gain_db", -math.inf))]
    rate = lambda trial: stored_rd_point(trial).get("dev_bpp", math.inf)  # noqa: E731
    by_rate = sorted(trials, key=lambda trial: (rate(trial), trial.number))
    picks = {round(i * (len(by_rate) - 1) / (n - 1)) for i in range(n)}
    return sorted((by_rate[i] for i in picks), key=lambda trial: trial.number)


def create_refine_study(
    url: str,
    parent: optuna.Study,
    numbers: Sequence[int] | None = None,
    child_name: str | None = None,
    trial_time_s: float | None = None,
    max_trials: int | None = None,
) -> StudyHandle:
    """The child study retraining ``numbers`` (or the Pareto front) of ``parent`` at ``[refine]``; with
    ``max_trials``, only that many of them, spread over rate (:func:`spread_over_rate`)."""
    spec = stored_spec(parent)
    if spec is None:
        raise SpecError(f"study {parent.study_name!r} has no stored spec: it was not made by shrink")
    trials = chosen_trials(parent, numbers)
    if max_trials is not None:
        trials = spread_over_rate(trials, max_trials)
    if spec.spec.test.data is not None:
        load_images(spec.spec.test.data)  # an unreadable test folder fails now, not after hours of training
    tickets = [ticket_for(parent, trial) for trial in trials]
    name = child_name or f"{parent.study_name}-refine"
    child = refine_spec(spec, len(trials), trial_time_s)
    for trial, (params, _) in zip(trials, tickets, strict=True):  # a study whose spec predates the check
        try:
            config_for(child, params)
        except SpecError as error:
            raise SpecError(f"trial {trial.number} cannot train at [refine]: {error}") from None
    attrs = {PARENT_STUDY_ATTR: parent.study_name, SEARCH_FIDELITY_ATTR: fidelity(spec)}
    return create(child, url, name, tickets, attrs)


def measure_test_curve(spec: ResolvedSpec, checkpoint: str, name: str) -> RDCurve | None:
    """The checkpoint's curve on ``[test].data`` at ``[test].qualities`` (full images, real files, as
    ``shrink eval``), without per-image rows; None when the spec names no test set."""
    test = spec.spec.test
    if test.data is None:
        return None
    model, config = load_model(checkpoint)
    curve = evaluate(model, load_images(test.data), test.qualities, build_codec(config.codec), name=name)
    return RDCurve(curve.name, curve.points)


@dataclass
class RankAgreement:
    """Does a short trial's rank predict its refined rank? Spearman's rho over (search, refined) dev gains."""

    pairs: list[tuple[int, float, float]]  # (parent trial, search dev gain, refined dev gain)
    rho: float | None  # None with fewer than 3 pairs or a constant side


def rank_agreement(child: optuna.Study) -> RankAgreement:
    pairs = []
    for trial in child.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        parent = read_parent_values(trial)
        search = None if parent is None else parent.dev_gain_db
        refined = stored_rd_point(trial).get("dev_gain_db")
        if search is not None and refined is not None:
            pairs.append((int(trial.user_attrs[PARENT_TRIAL_ATTR]), float(search), float(refined)))
    rho = None
    if len(pairs) >= 3:
        value = spearmanr([p[1] for p in pairs], [p[2] for p in pairs]).statistic
        rho = None if math.isnan(value) else float(value)
    return RankAgreement(sorted(pairs), rho)
