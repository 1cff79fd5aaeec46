"""A study finishes, whoever dies last: what a worker that finds no WAITING trial still waits for.

A worker does not stop while the study may still get a WAITING trial:

- a RUNNING trial that holds a ticket (another worker's): if that worker died, the trial is failed once its
  heartbeat grace runs out and re-queued as a WAITING retry (:class:`~shrink.search.storage.Requeue`), which
  the waiting worker then trains. It is waited for while it runs (it beats) until it ends or goes stale.
  One that has never beaten (asked with ``optuna ask`` and not yet run by ``shrink trial``, or whose worker
  died between its claim and its first beat) can never be judged stale: it is waited for
  ``NO_BEAT_INTERVALS`` heartbeat intervals at most;
- a FAILED trial whose retry is on its way: a re-queue is two writes (FAIL, then the WAITING retry; Optuna's
  stale-trial check and :func:`~shrink.search.worker.fail_and_requeue` alike), and a worker reading between
  them sees neither a ticket nor a RUNNING trial. A FAILED trial holding a ticket, with no retry yet, fewer
  than ``MAX_RETRY`` attempts, failed as stale or by a signal (no ``fail_reason``, or an interruption's) less
  than ``RETRY_GAP_S`` ago, is waited for until its retry appears or that time is out. Then its writer
  died between the two writes: on a database the waiting worker re-queues it itself
  (:meth:`~shrink.search.storage.ShrinkStorage.add_retry` adds one retry per trial, whoever adds it); on a
  journal or through a gRPC proxy a line says the ticket is left.

Without a heartbeat (a storage opened with ``heartbeat_interval=None``) nothing can tell a dead worker's trial
from a live one, nor fail it: RUNNING trials are not waited for, and one line says so.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from .budget import is_over_budget
from .records import FAIL_REASON_ATTR, INTERRUPTED_PREFIX, RETRY_HISTORY_ATTR
from .storage import (
    MAX_RETRY,
    Requeue,
    ShrinkStorage,
    heartbeat_enabled,
    storage_of,
    study_id_of,
    trial_id_of,
)

RETRY_GAP_S = 30.0  # the longest a re-queue's two writes are waited for (they are milliseconds apart)
NO_BEAT_INTERVALS = 2  # a claimed trial beats at once: one with no beat after 2 intervals never will
POLL_S = 0.5  # how soon a signal or --timeout ends a wait
LOOKS_PER_INTERVAL = 10


@dataclass
class Awaited:
    """What the study may still turn into WAITING trials, by trial number."""

    running: dict[int, float | None] = field(default_factory=dict)  # -> seconds since its last beat
    retries: list[int] = field(default_factory=list)  # failed trials whose retry is on its way
    not_waited: dict[int, str] = field(default_factory=dict)  # RUNNING trials left alone -> why

    def __bool__(self) -> bool:
        return bool(self.running or self.retries)

    def key(self) -> tuple:
        return tuple(self.running), tuple(self.retries), tuple(self.not_waited)

    def line(self) -> str:
        parts = []
        if self.running:
            parts.append(_running_part(self.running))
        if self.retries:
            numbers = ", ".join(map(str, self.retries))
            parts.append(f"the retry of failed trial{_s(self.retries)} {numbers} (being re-queued)")
        return "worker: no WAITING trial left; waiting for " + "; and for ".join(parts)


def _running_part(running: dict[int, float | None]) -> str:
    numbers = ", ".join(map(str, running))
    whose = "of another worker" if len(running) == 1 else "of other workers"
    ages = [age for age in running.values() if age is not None]
    beat = f"last heartbeat {min(ages):.0f} s ago" if ages else "no heartbeat yet"
    return (
        f"{len(running)} running trial{_s(running)} ({numbers}) {whose} ({beat}): a dead worker's trial is "
        "re-queued when its heartbeat grace runs out, and trained here"
    )


def _s(items) -> str:
    return "" if len(items) == 1 else "s"


class Drain:
    """What a worker whose queue is empty waits for, and since when (each wait is bounded)."""

    def __init__(self, study: optuna.Study, log: Callable[[str], None]):
        self.study, self.log = study, log
        self.storage = storage_of(study)
        self._first_seen: dict[tuple[int, TrialState], float] = {}
        self._said: tuple | None = None

    def wait(self, stop: Callable[[], bool]) -> bool:
        """False when nothing is awaited (the worker may stop); else say what (when that changed), sleep a
        while, until ``stop()`` turns true, and return True."""
        awaited = self.awaited()
        if awaited.key() != self._said:
            self._said = awaited.key()
            for number, why in awaited.not_waited.items():
                self.log(f"worker: not waiting for running trial {number}: {why}")
            if awaited:
                self.log(awaited.line())
        if not awaited:
            return False
        deadline = time.monotonic() + self._pause(awaited)
        while time.monotonic() < deadline and not stop():
            time.sleep(POLL_S)
        return True

    def awaited(self) -> Awaited:
        trials = self.study.get_trials(deepcopy=False)
        retried = {n for t in trials for n in t.system_attrs.get(RETRY_HISTORY_ATTR, ())}
        owed = [t for t in trials if self._retry_owed(t, retried)]
        awaited = Awaited(retries=[t.number for t in owed if self._within_gap(t)])
        awaited.retries += [t.number for t in owed if not self._within_gap(t) and self._repaired(t)]
        running = [t for t in trials if t.state == TrialState.RUNNING and not is_over_budget(t)]
        if not running:
            return awaited
        if not heartbeat_enabled(self.storage):
            why = "this worker has no heartbeat: it cannot tell a dead worker's trial from a live one"
            awaited.not_waited = dict.fromkeys((t.number for t in running), why)
            return awaited
        ages = heartbeat_ages(self.storage, study_id_of(self.study))
        for trial in running:
            age = None if ages is None else ages.get(trial_id_of(trial))
            never_beat = ages is not None and age is None
            if never_beat and self._seen_for(trial) > NO_BEAT_INTERVALS * self._interval():
                awaited.not_waited[trial.number] = (
                    "it has never beaten (asked with optuna ask and not yet run by shrink trial, or its "
                    "worker died before its first beat), so it can never be judged stale"
                )
            else:
                awaited.running[trial.number] = age
        return awaited

    def _retry_owed(self, trial: FrozenTrial, retried: set[int]) -> bool:
        """A FAILED trial holding a ticket whose retry Requeue adds, and has not added yet."""
        if trial.state != TrialState.FAIL or is_over_budget(trial) or trial.number in retried:
            return False
        if len(trial.system_attrs.get(RETRY_HISTORY_ATTR, ())) >= MAX_RETRY:
            return False  # Requeue adds no retry past MAX_RETRY attempts
        return str(trial.user_attrs.get(FAIL_REASON_ATTR) or INTERRUPTED_PREFIX).startswith(
            INTERRUPTED_PREFIX
        )

    def _within_gap(self, trial: FrozenTrial) -> bool:
        failed = trial.datetime_complete or datetime.datetime.now()
        failed_ago = (datetime.datetime.now() - failed).total_seconds()
        return failed_ago < RETRY_GAP_S and self._seen_for(trial) < RETRY_GAP_S

    def _repaired(self, trial: FrozenTrial) -> bool:
        """Re-queue a trial whose retry never came (its worker died between the FAIL and the retry): on a
        database, where the add is one retry per trial whoever repairs it at once. Elsewhere the ticket is
        left, in a line: two workers repairing it at one moment could add two retries."""
        if not isinstance(self.storage, ShrinkStorage) or self.storage.rdb is None:
            self.log(
                f"worker: failed trial {trial.number} has no retry (its worker died before writing it); "
                "not re-queued here: only a database adds one retry per trial whoever adds it at once"
            )
            return False
        Requeue()(self.study, trial)
        self.log(f"worker: re-queued failed trial {trial.number}, whose retry was never written")
        return True

    def _seen_for(self, trial: FrozenTrial) -> float:
        """Seconds since this worker first saw ``trial`` in its present state (bounds what clocks cannot)."""
        now = time.monotonic()
        return now - self._first_seen.setdefault((trial.number, trial.state), now)

    def _interval(self) -> float:
        return float(self.storage.get_heartbeat_interval() or 1)

    def _pause(self, awaited: Awaited) -> float:
        """Until the next look: a tenth of a heartbeat interval while trials run (so that the end of the last
        one ends the wait soon; a look costs three reads), a second for a retry on its way."""
        return max(1.0, self._interval() / LOOKS_PER_INTERVAL) if not awaited.retries else 1.0


def heartbeat_ages(storage: optuna.storages.BaseStorage, study_id: int) -> dict[int, float] | None:
    """Seconds since the last beat of each RUNNING trial that has beaten, by trial id
    (:meth:`ShrinkStorage.heartbeat_ages`); None when unknown this time or the storage is not ours."""
    return storage.heartbeat_ages(study_id) if isinstance(storage, ShrinkStorage) else None
