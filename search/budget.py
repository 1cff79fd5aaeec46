"""A study's trial budget as claim tickets, so that exactly ``budget.n_trials`` trials are ever trained.

``study create`` enqueues ``n_trials`` WAITING trials, the tickets, in one transaction on an RDB storage (all
or none, even when the process is killed). A worker only claims WAITING trials:
Optuna's WAITING -> RUNNING claim is atomic on every storage (a locked row on PostgreSQL, ``BEGIN
IMMEDIATE`` on SQLite, the journal's file lock), so two workers never hold one ticket. When none is left,
``study.ask()`` would create a new trial: a worker's storage (:meth:`ShrinkStorage.serve_worker
<shrink.search.storage.ShrinkStorage.serve_worker>`) raises :class:`BudgetSpent` instead, so the worker stops
without writing a row. A re-queued retry (heartbeat or signal) is a WAITING
trial too: it carries on its predecessor's ticket, and is added with a template, which stays allowed.
``optuna ask`` (the ask/tell path) pops tickets as well; a trial it had to create beyond them is refused by
``shrink trial`` (:func:`is_over_budget`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from .records import FAIL_REASON_ATTR, FAILED_TRIAL_ATTR, FIXED_PARAMS_ATTR, TICKET_ATTR
from .storage import BudgetSpent, ShrinkStorage, storage_of, study_id_of, trial_id_of

__all__ = ["BudgetSpent"]  # raised by the worker's storage; callers catch it from here

OVER_BUDGET = "over_budget"
Ticket = tuple[dict[str, Any], dict[str, Any]]  # (fixed params, user attributes) of a ticket


def issue_tickets(study: optuna.Study, n_trials: int, fixed: Sequence[Ticket] = ()) -> int:
    """Enqueue the tickets a study lacks (trials already started count as tickets); returns how many.

    ``fixed[i]``, when given, is ticket ``i``'s (params, user attributes): its trial samples exactly those
    params (Optuna's ``enqueue_trial`` mechanism, the ``fixed_params`` system attribute)."""
    trials = study.get_trials(deepcopy=False)
    started = [t for t in trials if t.state != TrialState.WAITING and TICKET_ATTR not in t.system_attrs]
    for trial in started:  # made by `optuna ask` before a spec was attached: they hold a ticket each
        storage_of(study).set_trial_system_attr(trial_id_of(trial), TICKET_ATTR, -1)
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
    the process is killed (:meth:`ShrinkStorage.add_trials_at_once
    <shrink.search.storage.ShrinkStorage.add_trials_at_once>`); other storages add them one by one."""
    storage = storage_of(study)
    if not (isinstance(storage, ShrinkStorage) and storage.add_trials_at_once(study_id_of(study), trials)):
        study.add_trials(trials)


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
            storage, trial_id = storage_of(study), trial_id_of(trial)
            try:
                storage.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, f"ticket {index} issued twice")
                dropped += storage.set_trial_state_values(trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:
                pass
        seen.add(index)
    return dropped


def is_over_budget(trial: FrozenTrial) -> bool:
    """A trial that holds no ticket: created because none was left."""
    return TICKET_ATTR not in trial.system_attrs


def tickets_left(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
