"""A study's trial budget as claim tickets, so that exactly ``budget.n_trials`` trials are ever trained.

``study create`` enqueues ``n_trials`` WAITING trials, the tickets, in one transaction on an RDB storage (all
or none, even when the process is killed). A worker only claims WAITING trials:
Optuna's WAITING -> RUNNING claim is atomic on every storage (a locked row on PostgreSQL, ``BEGIN
IMMEDIATE`` on SQLite, the journal's file lock), so two workers never hold one ticket. When none is left,
``study.ask()`` would create a new trial: :func:`refuse_new_trials` makes that raise :class:`BudgetSpent`
instead, so the worker stops without writing a row. A re-queued retry (heartbeat or signal) is a WAITING
trial too: it carries on its predecessor's ticket, and is added with a template, which stays allowed.
``optuna ask`` (the ask/tell path) pops tickets as well; a trial it had to create beyond them is refused by
``shrink trial`` (:func:`is_over_budget`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.storages._rdb import models as rdb_models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState

from .records import FAIL_REASON_ATTR, FAILED_TRIAL_ATTR, FIXED_PARAMS_ATTR, TICKET_ATTR
from .storage import _backend

OVER_BUDGET = "over_budget"
Ticket = tuple[dict[str, Any], dict[str, Any]]  # (fixed params, user attributes) of a ticket


class BudgetSpent(RuntimeError):
    """No ticket is left: the study has every trial its budget allows."""


def issue_tickets(study: optuna.Study, n_trials: int, fixed: Sequence[Ticket] = ()) -> int:
    """Enqueue the tickets a study lacks (trials already started count as tickets); returns how many.

    ``fixed[i]``, when given, is ticket ``i``'s (params, user attributes): its trial samples exactly those
    params (Optuna's ``enqueue_trial`` mechanism, the ``fixed_params`` system attribute)."""
    trials = study.get_trials(deepcopy=False)
    started = [t for t in trials if t.state != TrialState.WAITING and TICKET_ATTR not in t.system_attrs]
    for trial in started:  # made by `optuna ask` before a spec was attached: they hold a ticket each
        study._storage.set_trial_system_attr(trial._trial_id, TICKET_ATTR, -1)
    have = sum(1 for t in trials if TICKET_ATTR in t.system_attrs and FAILED_TRIAL_ATTR not in t.system_attrs)
    held = have + len(started)
    add_trials(study, [_ticket(index, fixed) for index in range(held, n_trials)])
    return max(0, n_trials - held)


def _ticket(index: int, fixed: Sequence[Ticket]) -> FrozenTrial:
    system_attrs: dict = {TICKET_ATTR: index}
    user_attrs: dict = {}
    if index < len(fixed):
        system_attrs[FIXED_PARAMS_ATTR], user_attrs = fixed[index]
    return optuna.trial.create_trial(
        state=TrialState.WAITING, system_attrs=system_attrs, user_attrs=user_attrs
    )


def add_trials(study: optuna.Study, trials: Sequence[FrozenTrial]) -> None:
    """Add ``trials`` to the study: on an RDB storage in one transaction, so all or none are added even if
    the process is killed (Optuna's ``add_trials`` commits each trial on its own, about 100 a second; this
    uses the storage's own per-trial insert, under the same study lock, inside one session). Other storages
    add them one by one."""
    backend = _backend(study._storage)
    if not isinstance(backend, RDBStorage):
        study.add_trials(trials)
        return
    for trial in trials:
        trial._validate()
    with _create_scoped_session(backend.scoped_session) as session:
        rdb_models.StudyModel.find_or_raise_by_id(study._study_id, session, for_update=True)
        for trial in trials:
            backend._get_prepared_new_trial(study._study_id, trial, session)


def drop_duplicate_tickets(study: optuna.Study) -> int:
    """Fail the later copies of tickets issued twice (workers adopting one ``optuna create-study`` study at
    the same moment each issue them) while they still wait; returns how many were dropped."""
    seen: set[int] = set()
    dropped = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        index = trial.system_attrs.get(TICKET_ATTR)
        if index is None or index < 0 or FAILED_TRIAL_ATTR in trial.system_attrs:
            continue
        if index in seen:
            storage = study._storage
            try:
                storage.set_trial_user_attr(trial._trial_id, FAIL_REASON_ATTR, f"ticket {index} issued twice")
                dropped += storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:
                pass
        seen.add(index)
    return dropped


def is_over_budget(trial: FrozenTrial) -> bool:
    """A trial that holds no ticket: created because none was left."""
    return TICKET_ATTR not in trial.system_attrs


def tickets_left(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def refuse_new_trials(storage: optuna.storages.BaseStorage) -> None:
    """From now on a new trial without a template (``study.ask()`` finding no ticket) raises BudgetSpent."""
    create = storage.create_new_trial

    def create_new_trial(study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is None:
            raise BudgetSpent("no trial of the study's budget is left to claim")
        return create(study_id, template_trial)

    storage.create_new_trial = create_new_trial
