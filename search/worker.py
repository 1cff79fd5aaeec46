"""A worker: run trials of one study until its budget is spent, a limit is hit, or a signal arrives.

Any number of workers (processes, GPUs, machines) may attach to one study. Each claims WAITING trials only:
the budget's tickets and re-queued retries (see :mod:`shrink.search.budget`), so exactly ``n_trials`` are
trained however many workers race. On SIGINT/SIGTERM the running trial checkpoints, is marked FAILED and
re-queued (so it resumes elsewhere), and the worker exits with 128 + the signal number. A trial that was
failed as stale while it still ran (a heartbeat lost for longer than the grace period) stops at its next
epoch and leaves the run to its retry; the worker goes on. A database that goes away for a while (a
PostgreSQL restart) is outlived: see :class:`shrink.search.storage.ShrinkStorage`. :class:`SignalStop` and
:func:`fail_and_requeue` are shared with ``shrink trial`` (:mod:`shrink.search.asked`).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from shrink.compression.text import plain_text

from .budget import BudgetSpent, is_over_budget, tickets_left
from .records import DECODER_MACS_ATTR, RETRY_HISTORY_ATTR, WALL_S_ATTR, read_rd_point, verdict
from .storage import Requeue, heartbeat_enabled, read_trial, storage_of
from .study import StudyHandle
from .trial_runner import OnComplete, TrialRunner


@dataclass
class WorkerResult:
    trials: dict[int, str] = field(default_factory=dict)  # trial number -> final state name
    signal: int | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.signal is None else 128 + self.signal


def trials_used(study: optuna.Study) -> int:
    """Tickets claimed: trials started on one of the budget's tickets (a retry carries its predecessor's)."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get(RETRY_HISTORY_ATTR, [])}
    return sum(
        1
        for t in trials
        if not is_over_budget(t) and t.state != TrialState.WAITING and t.number not in retried
    )


class SignalStop:
    """While in effect, SIGINT/SIGTERM ask the trial runner to checkpoint and stop (the trial then ends
    FAILED, for :func:`fail_and_requeue`); a second signal stops at once (KeyboardInterrupt)."""

    def __init__(self, runner: TrialRunner, log: Callable[[str], None] | None = None):
        self.runner, self.log = runner, log
        self.signal: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> SignalStop:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signal = signum
        if self.log is not None:
            self.log(f"worker: {signal.Signals(signum).name} received; checkpointing the running trial")
        self.runner.request_stop()

    @property
    def exit_code(self) -> int:
        return 0 if self.signal is None else 128 + self.signal


def fail_and_requeue(study: optuna.Study, number: int) -> FrozenTrial:
    """A trial a signal stopped: failed (unless already finished) and, if FAILED, re-queued as a WAITING
    retry that resumes from its checkpoint, so that it is never left RUNNING. Returns the trial as stored."""
    trial = study.get_trials(deepcopy=False)[number]
    if trial.state == TrialState.RUNNING:
        study.tell(number, state=TrialState.FAIL)
        trial = study.get_trials(deepcopy=False)[number]
    if trial.state == TrialState.FAIL:
        Requeue()(study, trial)
    return trial


def study_budget_reached(handle: StudyHandle) -> bool:
    """No ticket or retry is left to claim (a dead worker's stale trial is re-queued first)."""
    if heartbeat_enabled(storage_of(handle.study)):
        fail_stale_trials(handle.study)  # a dead worker's RUNNING trial becomes FAILED + a WAITING retry
    return tickets_left(handle.study) == 0


class Worker:
    def __init__(
        self,
        handle: StudyHandle,
        run_root: str | Path,
        log: Callable[[str], None] = print,
        on_trial_end: Callable[[optuna.trial.FrozenTrial], None] | None = None,
        on_complete: OnComplete | None = None,
    ):
        self.handle, self.log, self.on_trial_end = handle, log, on_trial_end
        self.storage = storage_of(handle.study)
        self.storage.serve_worker(log)  # refuse trials beyond the budget; outlive a database restart
        self.runner = TrialRunner(handle, run_root, log, on_complete)
        self.stop = SignalStop(self.runner, log)

    @property
    def signal(self) -> int | None:
        return self.stop.signal

    def run(self, n_trials: int | None = None, timeout: float | None = None) -> WorkerResult:
        result = WorkerResult()
        deadline = None if timeout is None else time.monotonic() + timeout
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with self.stop:
            while self.signal is None:
                if n_trials is not None and len(result.trials) >= n_trials:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if study_budget_reached(self.handle):
                    if not self._wait_for_unsure_claims():
                        break
                elif not self._one_trial(result):
                    break
        result.signal = self.signal
        return result

    def _wait_for_unsure_claims(self) -> bool:
        """Claims whose answer a lost connection swallowed (``ShrinkStorage.unsure_claims``) may be this
        worker's: wait while one is RUNNING, until its heartbeat goes stale and it is re-queued, or it
        ends."""
        storage = self.storage
        unsure = storage.unsure_claims
        unsure -= {i for i in unsure if read_trial(storage, i).state != TrialState.RUNNING}
        if unsure:
            time.sleep(storage.get_heartbeat_interval() or 1)
        return bool(unsure)

    def _taken_over(self) -> bool:
        """The trial this worker ran was finished by another (failed as stale while it ran)."""
        number = self.runner.last_trial_number
        if number is None:
            return False
        return self.handle.study.get_trials(deepcopy=False)[number].state.is_finished()

    def _one_trial(self, result: WorkerResult) -> bool:
        """Claim and run one trial; False when no trial of the budget was left to claim."""
        study = self.handle.study
        self.runner.last_trial_number = None
        try:
            study.optimize(self.runner, n_trials=1, catch=(Exception,), gc_after_trial=True)
        except BudgetSpent:
            return False
        except Exception:  # Optuna's tell of a trial finished elsewhere raises (several kinds, by timing)
            if not self._taken_over():
                raise
            self.log(f"trial {self.runner.last_trial_number} was taken over by its retry; result discarded")
        except KeyboardInterrupt:
            if self.signal is None:
                self.stop.signal = signal.SIGINT
        if self.runner.last_trial_number is None:
            return True
        trial = study.get_trials(deepcopy=False)[self.runner.last_trial_number]
        if self.signal is not None:
            trial = fail_and_requeue(study, trial.number)
            if trial.state == TrialState.FAIL:
                self.log(f"trial {trial.number} checkpointed and re-queued")
        result.trials[trial.number] = trial.state.name
        self.log(describe(trial))
        if self.on_trial_end is not None:
            self.on_trial_end(trial)
        return True


def _rate(change: float | None) -> str:
    return "" if change is None else f", rate {100 * change:+.1f}%"  # None: a trial of an earlier version


def describe(trial: optuna.trial.FrozenTrial) -> str:
    attrs = trial.user_attrs
    point = read_rd_point(trial) if trial.state == TrialState.COMPLETE else None
    if point is not None:
        return (
            f"trial {trial.number} COMPLETE: dev bpp {point.dev_bpp:.4f} "
            f"MS-SSIM {point.dev_msssim:.4f} vs JPEG {point.dev_gain_db:+.3f} dB"
            + _rate(point.dev_rate_change)
            + " "
            + (f"decoder {attrs[DECODER_MACS_ATTR]:,.0f} MACs/px " if DECODER_MACS_ATTR in attrs else "")
            + f"({attrs.get(WALL_S_ATTR, 0):.0f}s)"
        )
    return f"trial {trial.number} {trial.state.name}: {plain_text(verdict(trial), limit=None)}"
