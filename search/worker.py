"""A worker: run trials of one study until its budget is spent, a limit is hit, or a signal arrives.

Any number of workers (processes, GPUs, machines) may attach to one study. Each claims WAITING trials only:
the budget's tickets and re-queued retries (see :mod:`shrink.search.budget`), so exactly ``n_trials`` are
trained however many workers race. On SIGINT/SIGTERM the running trial checkpoints, is marked FAILED and
re-queued (so it resumes elsewhere), and the worker exits with 128 + the signal number. A trial that was
failed as stale while it still ran (a heartbeat lost for longer than the grace period) stops at its next
epoch and leaves the run to its retry; the worker goes on. A database that goes away for a while (a
PostgreSQL restart) is outlived: see :func:`shrink.search.storage.retry_storage_calls`.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.storages import fail_stale_trials
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import TrialState

from .budget import BudgetSpent, is_over_budget, refuse_new_trials, tickets_left
from .records import DECODER_MACS_ATTR, RETRY_HISTORY_ATTR, WALL_S_ATTR, read_rd_point, verdict
from .storage import UNSURE_CLAIMS, Requeue, read_trial, retry_storage_calls
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


def study_budget_reached(handle: StudyHandle) -> bool:
    """No ticket or retry is left to claim (a dead worker's stale trial is re-queued first)."""
    if is_heartbeat_enabled(handle.study._storage):
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
        retry_storage_calls(handle.study._storage, handle.url, log)
        refuse_new_trials(handle.study._storage)
        self.runner = TrialRunner(handle, run_root, log, on_complete)
        self.signal: int | None = None

    def _handle_signal(self, signum, frame) -> None:
        if self.signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signal = signum
        self.log(f"worker: {signal.Signals(signum).name} received; checkpointing the running trial")
        self.runner.request_stop()

    def run(self, n_trials: int | None = None, timeout: float | None = None) -> WorkerResult:
        result = WorkerResult()
        deadline = None if timeout is None else time.monotonic() + timeout
        previous = {sig: signal.signal(sig, self._handle_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
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
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        result.signal = self.signal
        return result

    def _wait_for_unsure_claims(self) -> bool:
        """Claims whose answer a lost connection swallowed (storage.UNSURE_CLAIMS) may be this worker's:
        wait while one is RUNNING, until its heartbeat goes stale and it is re-queued, or it ends."""
        storage = self.handle.study._storage
        unsure = getattr(storage, UNSURE_CLAIMS, set())
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
                self.signal = signal.SIGINT
        if self.runner.last_trial_number is None:
            return True
        trial = study.get_trials(deepcopy=False)[self.runner.last_trial_number]
        if self.signal is not None and trial.state == TrialState.FAIL:
            Requeue()(study, trial)
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
    return f"trial {trial.number} {trial.state.name}: {verdict(trial)}"
