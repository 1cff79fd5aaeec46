"""One trial asked with ``optuna ask`` (external schedulers, SLURM arrays), trained here: ``shrink trial``.

``optuna ask`` pops one of the budget's tickets, or creates a trial beyond them, which is refused here and
failed as ``over_budget``; a trial asked with another search space than the spec's is refused likewise (a
refused trial is failed with its reason, never left RUNNING). While it trains, the trial's heartbeat is
recorded, so a worker re-queues it if this process dies; SIGINT/SIGTERM checkpoint it and re-queue it, as a
worker does (:class:`~shrink.search.worker.SignalStop`, :func:`~shrink.search.worker.fail_and_requeue`),
whether or not the caller tells the result.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from .budget import OVER_BUDGET, is_over_budget
from .records import FAIL_REASON_ATTR
from .space import distributions
from .spec import ResolvedSpec
from .storage import heartbeat_thread, storage_of, study_id_of, trial_id_of
from .study import StudyHandle
from .trial_runner import TrialRunner
from .worker import SignalStop, fail_and_requeue


@dataclass
class AskedOutcome:
    """How an asked trial ended: exactly one of ``values`` (trained), ``pruned``, ``interrupted`` (a
    signal: checkpointed and re-queued) and ``error`` is set."""

    number: int
    values: tuple[float, ...] | None = None
    pruned: optuna.TrialPruned | None = None
    interrupted: KeyboardInterrupt | None = None
    error: Exception | None = None
    signal: int | None = None

    @property
    def exit_code(self) -> int:
        if self.interrupted is not None:
            return 128 + (self.signal or signal.SIGINT)
        return 1 if self.error is not None else 0


def run_asked_trial(handle: StudyHandle, number: int, runner: TrialRunner, tell: bool) -> AskedOutcome:
    """Train the RUNNING trial ``number``; ``tell``: finish it here (else the caller tells its values).

    A trial that is not RUNNING, lies beyond the budget or was asked in another space raises ValueError
    (the last two are failed first, with their reason)."""
    study = handle.study
    frozen = _checked_asked_trial(handle, number)
    # `optuna ask` claimed its ticket through Optuna's own storage, which issues no next one
    storage_of(study).top_up_tickets(study_id_of(study))
    trial = optuna.Trial(study, trial_id_of(frozen))
    with SignalStop(runner) as stop:
        try:
            with heartbeat_thread(storage_of(study), trial_id_of(trial)):
                values = runner(trial)
        except optuna.TrialPruned as pruned:
            if tell:
                study.tell(trial, state=TrialState.PRUNED)
            return AskedOutcome(number, pruned=pruned)
        except KeyboardInterrupt as interrupt:
            fail_and_requeue(study, number)
            return AskedOutcome(number, interrupted=interrupt, signal=stop.signal)
        except Exception as error:
            if tell:
                study.tell(trial, state=TrialState.FAIL)
            return AskedOutcome(number, error=error)
    values = values if isinstance(values, tuple) else (values,)
    if tell:
        study.tell(trial, list(values))
    return AskedOutcome(number, values=values)


def _checked_asked_trial(handle: StudyHandle, number: int) -> FrozenTrial:
    frozen = _running_trial(handle.study, number)
    n_trials = handle.spec.spec.budget.n_trials
    if is_over_budget(frozen):
        _fail(handle.study, frozen, f"{OVER_BUDGET}: the study's {n_trials} trials are taken")
        raise ValueError(
            f"trial {frozen.number} is beyond the study's budget of {n_trials} trials; "
            f"it was failed as {OVER_BUDGET}"
        )
    mismatch = _space_mismatch(frozen, handle.spec)
    if mismatch:
        _fail(handle.study, frozen, f"search space differs from the study's spec: {mismatch}")
        raise ValueError(
            f"trial {frozen.number} was asked with another search space than the spec's: {mismatch}"
        )
    return frozen


def _running_trial(study: optuna.Study, number: int) -> FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise ValueError(f"study {study.study_name!r} has no trial number {number}")
    if trials[number].state != TrialState.RUNNING:
        raise ValueError(
            f"trial {number} is {trials[number].state.name}, not RUNNING (ask it with optuna ask)"
        )
    return trials[number]


def _space_mismatch(trial: FrozenTrial, spec: ResolvedSpec) -> str:
    """The asked parameters whose distribution is not the spec's (``optuna ask`` with another space)."""
    space = distributions(spec)
    wrong = [name for name, dist in trial.distributions.items() if space.get(name) != dist]
    return ", ".join(f"{name} (asked {trial.distributions[name]}, spec {space.get(name)})" for name in wrong)


def _fail(study: optuna.Study, trial: FrozenTrial, reason: str) -> None:
    """A trial this command refuses is failed with its reason: never left RUNNING."""
    storage_of(study).set_trial_user_attr(trial_id_of(trial), FAIL_REASON_ATTR, reason)
    study.tell(trial.number, state=TrialState.FAIL)
