"""A worker: run trials of one study until its budget is reached, a limit is hit, or a signal arrives.

Any number of workers (processes, GPUs, machines) may attach to one study: Optuna's storage hands each its
own trials, and re-queued (WAITING) trials are taken first. On SIGINT/SIGTERM the running trial checkpoints,
is marked FAILED and re-queued (so it resumes elsewhere), and the worker exits with 128 + the signal number.
A database that goes away for a while (a PostgreSQL restart) is outlived: see
:func:`shrink.search.storage.retry_storage_calls`.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import TrialState

from .storage import MAX_RETRY, retry_storage_calls
from .study import StudyHandle
from .trial_runner import OnComplete, TrialRunner

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


@dataclass
class WorkerResult:
    trials: dict[int, str] = field(default_factory=dict)  # trial number -> final state name
    signal: int | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.signal is None else 128 + self.signal


def trials_used(study: optuna.Study) -> int:
    """Trials counting against the budget: finished or running, and failed ones that were not retried."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return sum(
        1 for t in trials if t.state in COUNTED or (t.state == TrialState.FAIL and t.number not in retried)
    )


def has_waiting(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def study_budget_reached(handle: StudyHandle) -> bool:
    if is_heartbeat_enabled(handle.study._storage):
        fail_stale_trials(handle.study)  # a dead worker's RUNNING trial becomes FAILED + a WAITING retry
    return not has_waiting(handle.study) and trials_used(handle.study) >= handle.spec.spec.budget.n_trials


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
            while self.signal is None and not study_budget_reached(self.handle):
                if n_trials is not None and len(result.trials) >= n_trials:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self._one_trial(result)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        result.signal = self.signal
        return result

    def _one_trial(self, result: WorkerResult) -> None:
        study = self.handle.study
        self.runner.last_trial_number = None
        try:
            study.optimize(self.runner, n_trials=1, catch=(Exception,), gc_after_trial=True)
        except KeyboardInterrupt:
            if self.signal is None:
                self.signal = signal.SIGINT
        if self.runner.last_trial_number is None:
            return
        trial = study.get_trials(deepcopy=False)[self.runner.last_trial_number]
        if self.signal is not None and trial.state == TrialState.FAIL:
            RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, trial)
            self.log(f"trial {trial.number} checkpointed and re-queued")
        result.trials[trial.number] = trial.state.name
        self.log(describe(trial))
        if self.on_trial_end is not None:
            self.on_trial_end(trial)


def describe(trial: optuna.trial.FrozenTrial) -> str:
    attrs = trial.user_attrs
    point = attrs.get("rd_point")
    if trial.state == TrialState.COMPLETE and point:
        return (
            f"trial {trial.number} COMPLETE: dev bpp {point['dev_bpp']:.4f} "
            f"MS-SSIM {point['dev_msssim']:.4f} gain vs JPEG {point['dev_gain_db']:+.3f} dB "
            f"({attrs.get('wall_s', 0):.0f}s)"
        )
    reason = attrs.get("prune_reason") or attrs.get("fail_reason") or ""
    return f"trial {trial.number} {trial.state.name}: {reason}"
