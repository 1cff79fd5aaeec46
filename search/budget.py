"""A study's trial budget as claim tickets, so that exactly ``budget.n_trials`` trials are ever trained.

Ticket ``i`` (``0 <= i < n_trials``) is a WAITING trial with ``i`` in its system attributes. A worker only
claims WAITING trials: Optuna's WAITING -> RUNNING claim is atomic on every storage (a locked row on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite, the journal's file lock), so two workers never hold one ticket.
When none is left, ``study.ask()`` would create a new trial: a worker's storage
(:meth:`ShrinkStorage.serve_worker <shrink.search.storage.ShrinkStorage.serve_worker>`) raises
:class:`BudgetSpent` instead, so the worker stops without writing a row. A re-queued retry (heartbeat or
signal) is a WAITING trial too: it carries on its predecessor's ticket, and is added with a template, which
stays allowed. ``optuna ask`` (the ask/tell path) pops tickets as well; a trial it had to create beyond them
is refused by ``shrink trial`` (:func:`is_over_budget`).

**Issued lazily.** On a database (directly or through a gRPC proxy) ``study create`` issues the first
``TICKET_WINDOW`` tickets (and every ticket with fixed params), in one transaction with a
:class:`~shrink.search.records.TicketWindow` counter in the study's system attributes; each claim then issues
the next (:meth:`ShrinkStorage.top_up_tickets <shrink.search.storage.ShrinkStorage.top_up_tickets>`, under
the study row's lock, by the claiming worker or by the proxy that served the claim), so that
``max(TICKET_WINDOW, RUNNING trials)`` tickets wait: as many as the workers at hand. Every read of the
study's unfinished trials (Optuna's cache re-reads them all, several times per trial) then costs
O(window + running) instead of O(remaining budget): at 10,000 WAITING tickets one such read took 1.8 s
(results/2026-12-06-load.md). A journal gets every ticket at create, as before; so did studies created
before this counter existed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from .records import FAIL_REASON_ATTR, FAILED_TRIAL_ATTR, TICKET_ATTR, TICKET_WINDOW_ATTR, TicketWindow
from .storage import BudgetSpent, ShrinkStorage, storage_of, study_id_of, ticket, trial_id_of

__all__ = ["BudgetSpent"]  # raised by the worker's storage; callers catch it from here

OVER_BUDGET = "over_budget"
Ticket = tuple[dict[str, Any], dict[str, Any]]  # (fixed params, user attributes) of a ticket
TICKET_WINDOW = 64  # WAITING tickets kept on a database: more than the workers that claim at one moment


def issue_tickets(
    study: optuna.Study, n_trials: int, fixed: Sequence[Ticket] = (), window: int = TICKET_WINDOW
) -> int:
    """Issue the tickets a study lacks (trials already started count as tickets), all of them or, on a
    database, the first ``window`` and every fixed one (the rest as the first are claimed); returns how many.

    ``fixed[i]``, when given, is ticket ``i``'s (params, user attributes): its trial samples exactly those
    params (Optuna's ``enqueue_trial`` mechanism, the ``fixed_params`` system attribute)."""
    storage = storage_of(study)
    trials = study.get_trials(deepcopy=False)
    started = [t for t in trials if t.state != TrialState.WAITING and TICKET_ATTR not in t.system_attrs]
    for trial in started:  # made by `optuna ask` before a spec was attached: they hold a ticket each
        storage.set_trial_system_attr(trial_id_of(trial), TICKET_ATTR, -1)
    have = sum(1 for t in trials if TICKET_ATTR in t.system_attrs and FAILED_TRIAL_ATTR not in t.system_attrs)
    held = have + len(started)
    lazy = isinstance(storage, ShrinkStorage) and (storage.rdb is not None or storage.remote)
    end = min(n_trials, max(len(fixed), held + window)) if lazy else n_trials
    counter = TicketWindow(budget=n_trials, window=window, issued=max(held, end))
    tickets = [ticket(index, fixed[index] if index < len(fixed) else None) for index in range(held, end)]
    add_trials(study, tickets, {TICKET_WINDOW_ATTR: counter.model_dump()} if lazy else {})
    return max(0, end - held)


def add_trials(
    study: optuna.Study, trials: Sequence[FrozenTrial], study_system_attrs: Mapping[str, Any] | None = None
) -> None:
    """Add ``trials`` to the study, then set ``study_system_attrs``: on an RDB storage in one transaction,
    so all or none are added even if the process is killed (:meth:`ShrinkStorage.add_trials_at_once
    <shrink.search.storage.ShrinkStorage.add_trials_at_once>`); other storages add them one by one."""
    storage = storage_of(study)
    if isinstance(storage, ShrinkStorage) and storage.add_trials_at_once(
        study_id_of(study), trials, study_system_attrs
    ):
        return
    study.add_trials(trials)
    for key, value in (study_system_attrs or {}).items():
        storage.set_study_system_attr(study_id_of(study), key, value)


def ticket_window(study: optuna.Study) -> TicketWindow | None:
    """How far the study's tickets are issued; None when all were issued at create."""
    stored = storage_of(study).get_study_system_attrs(study_id_of(study)).get(TICKET_WINDOW_ATTR)
    return None if stored is None else TicketWindow.model_validate(stored)


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
    """Tickets not yet claimed: WAITING ones (retries included) and those still to be issued."""
    window = ticket_window(study)
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    return waiting + (0 if window is None else window.unissued)
