"""A worker: run trials of one study until its budget is spent, a limit is hit, or a signal arrives.

Any number of workers (processes, GPUs, machines) may attach to one study. Each claims WAITING trials only:
the budget's tickets and re-queued retries (see :mod:`shrink.search.budget`), so exactly ``n_trials`` are
trained however many workers race. On SIGINT/SIGTERM the running trial checkpoints, is marked FAILED and
re-queued (so it resumes elsewhere), and the worker exits with 128 + the signal number. A trial that was
failed as stale while it still ran (a heartbeat lost for longer than the grace period) stops at its next
epoch and leaves the run to its retry; the worker goes on. A worker that finds no WAITING trial while
the study may still get one (a RUNNING trial whose worker may be dead, a retry being re-queued) waits for
it and trains it: a study finishes whoever dies last (:mod:`shrink.search.drain`). A database that goes
away for a while (a PostgreSQL restart) is outlived: see :class:`shrink.search.storage.ShrinkStorage`.
:class:`SignalStop` and :func:`fail_and_requeue` are shared with ``shrink trial``
(:mod:`shrink.search.asked`).
"""

from __future__ import annotations

import logging
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from shrink.compression.text import plain_text

from .budget import BudgetSpent, is_over_budget, tickets_left
from .drain import Drain
from .records import DECODER_MACS_ATTR, RETRY_HISTORY_ATTR, WALL_S_ATTR, read_rd_point, verdict
from .storage import Requeue, heartbeat_enabled, storage_of, study_id_of
from .study import StudyHandle
from .trial_runner import OnComplete, TrialRunner, TrialTakenOver

TICKET_POLL_S = 0.2  # how soon a worker that found no WAITING ticket looks again
OPTIMIZE_LOGGER = "optuna.study._optimize"  # the logger of Optuna's optimize loop (its failed-trial warnings)


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
    FAILED, for :func:`fail_and_requeue`); a SIGINT after that stops at once (KeyboardInterrupt), a repeated
    SIGTERM changes nothing."""

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
        if self.signal is not None:
            if signum == signal.SIGINT:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            return  # a repeated SIGTERM is the same request (Slurm signals a step's processes, launch too)
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
        self.drain = Drain(handle.study, log)

    @property
    def signal(self) -> int | None:
        return self.stop.signal

    def run(self, n_trials: int | None = None, timeout: float | None = None) -> WorkerResult:
        result = WorkerResult()
        deadline = None if timeout is None else time.monotonic() + timeout
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with quiet_taken_over():
            return self._run(result, n_trials, deadline)

    def _run(self, result: WorkerResult, n_trials: int | None, deadline: float | None) -> WorkerResult:
        def stopping() -> bool:
            return self.signal is not None or (deadline is not None and time.monotonic() >= deadline)

        with self.stop:
            while not stopping():
                if n_trials is not None and len(result.trials) >= n_trials:
                    break
                if study_budget_reached(self.handle):
                    # a RUNNING trial (another worker's, or a claim of ours whose answer was lost) or a retry
                    # being re-queued may still become WAITING: wait for it, bounded (see drain.py)
                    if not self.drain.wait(stopping):
                        break
                else:
                    self._one_trial(result)
        result.signal = self.signal
        return result

    def _taken_over(self) -> bool:
        """The trial this worker ran was finished by another (failed as stale while it ran)."""
        number = self.runner.last_trial_number
        if number is None:
            return False
        return self.handle.study.get_trials(deepcopy=False)[number].state.is_finished()

    def _one_trial(self, result: WorkerResult) -> None:
        """Claim and run one trial (none when another worker claimed the last WAITING one first: the run loop
        then looks again, and waits for what may still come)."""
        study = self.handle.study
        self.runner.last_trial_number = None
        taken_over = False
        try:
            study.optimize(self.runner, n_trials=1, catch=(Exception,), gc_after_trial=True)
        except BudgetSpent:  # another worker claimed the last WAITING ticket; the next may be unissued yet
            if not self.storage.top_up_tickets(study_id_of(study)):  # (its claimer died before topping up)
                time.sleep(TICKET_POLL_S)  # the proxy that served the claims tops up; or none is left
            return
        except Exception:  # Optuna's tell of a trial finished elsewhere raises (several kinds, by timing)
            if not self._taken_over():
                raise
            taken_over = True
        except KeyboardInterrupt:
            if self.signal is None:
                self.stop.signal = signal.SIGINT
        if self.runner.last_trial_number is None:
            return
        trial = study.get_trials(deepcopy=False)[self.runner.last_trial_number]
        if self.signal is not None and not taken_over:
            trial = fail_and_requeue(study, trial.number)
            if trial.state == TrialState.FAIL:
                self.log(f"trial {trial.number} checkpointed and re-queued")
        result.trials[trial.number] = trial.state.name
        if taken_over:  # Optuna's own warnings about it are filtered out (TakenOverFilter)
            self.log(f"trial {trial.number} was taken over by its retry; result discarded")
        else:
            self.log(describe(trial))
        if self.on_trial_end is not None:
            self.on_trial_end(trial)


class TakenOverFilter(logging.Filter):
    """Drops Optuna's two warnings (a traceback, then "failed with value None") about a trial that was failed
    as stale while this worker ran it: the worker says it in one line ("taken over by its retry")."""

    FAILED = re.compile(r"^Trial (\d+) failed with (parameters|value)")

    def __init__(self) -> None:
        super().__init__()
        self.dropping: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        failed = self.FAILED.match(str(record.msg))
        if failed is None:
            return True
        number, part = failed.groups()
        error = record.exc_info[1] if record.exc_info else None
        if part == "parameters" and isinstance(error, (TrialTakenOver, UpdateFinishedTrialError)):
            self.dropping.add(number)
            return False
        if part == "value" and number in self.dropping:
            self.dropping.discard(number)
            return False
        return True


@contextmanager
def quiet_taken_over() -> Iterator[None]:
    """While in effect, Optuna's optimize loop says nothing of a trial taken over (TakenOverFilter)."""
    logger, taken_over = logging.getLogger(OPTIMIZE_LOGGER), TakenOverFilter()
    logger.addFilter(taken_over)
    try:
        yield
    finally:
        logger.removeFilter(taken_over)


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
