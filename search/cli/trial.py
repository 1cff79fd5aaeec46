"""shrink trial --storage URL --study-name N --trial-number T: run one trial asked with ``optuna ask``.

For external schedulers (SLURM arrays): ``optuna ask --search-space "$(shrink space SPEC)"`` pops one of the
budget's tickets (or creates a trial beyond them, which is refused here and failed as ``over_budget``), this
command trains it and records its attributes, then prints the values for ``optuna tell`` (``--tell``
finishes it here instead). While it trains, the trial's heartbeat is recorded, so a worker re-queues it if
this process dies; SIGINT/SIGTERM checkpoint it and re-queue it (exit code 128 + the signal), whatever
``--tell`` says, so that it is never left RUNNING.
"""

from __future__ import annotations

import argparse
import signal
import sys

import optuna
from optuna.storages._heartbeat import get_heartbeat_thread
from optuna.trial import FrozenTrial, TrialState

from shrink.search.budget import OVER_BUDGET, is_over_budget
from shrink.search.records import FAIL_REASON_ATTR
from shrink.search.space import distributions
from shrink.search.spec import ResolvedSpec, load_spec
from shrink.search.storage import Requeue
from shrink.search.study import attach
from shrink.search.trial_runner import TrialRunner, default_run_root

from ._common import ArgumentParser, run_command
from ._hooks import dashboard_hooks
from .worker import add_study_arguments


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shrink trial", description="Run one RUNNING trial created by `optuna ask`.")
    add_study_arguments(parser)
    parser.add_argument("--trial-number", type=int, required=True)
    parser.add_argument(
        "--tell", action="store_true", help="finish the trial here (else print values for optuna tell)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    handle = attach(args.storage, args.study_name, load_spec(args.spec) if args.spec else None)
    study = handle.study
    frozen = _running_trial(study, args.trial_number)
    if is_over_budget(frozen):
        _fail(
            study, frozen, f"{OVER_BUDGET}: the study's {handle.spec.spec.budget.n_trials} trials are taken"
        )
        raise ValueError(
            f"trial {frozen.number} is beyond the study's budget of {handle.spec.spec.budget.n_trials} "
            f"trials; it was failed as {OVER_BUDGET}"
        )
    mismatch = _space_mismatch(frozen, handle.spec)
    if mismatch:
        _fail(study, frozen, f"search space differs from the study's spec: {mismatch}")
        raise ValueError(
            f"trial {frozen.number} was asked with another search space than the spec's: {mismatch}"
        )
    trial = optuna.Trial(study, frozen._trial_id)
    # stdout carries only the values (for `optuna tell --values $(shrink trial ...)`); logs go to stderr
    run_root = args.run_root or default_run_root(args.storage)
    hooks = dashboard_hooks(handle, run_root)
    runner = TrialRunner(handle, run_root, log=_log_to_stderr, on_complete=hooks["on_complete"])
    received: list[int] = []

    def on_signal(signum, frame) -> None:
        received.append(signum)
        runner.request_stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with get_heartbeat_thread(trial._trial_id, study._storage):
            values = runner(trial)
    except optuna.TrialPruned as pruned:
        print(f"pruned: {pruned}", file=sys.stderr)
        if args.tell:
            study.tell(trial, state=TrialState.PRUNED)
        print("state pruned")
        return 0
    except KeyboardInterrupt as interrupt:
        study.tell(trial, state=TrialState.FAIL)
        Requeue()(study, study._storage.get_trial(trial._trial_id))
        print(f"shrink trial: trial {trial.number} {interrupt}; re-queued to resume", file=sys.stderr)
        return 128 + (received[0] if received else signal.SIGINT)
    except Exception as error:
        if args.tell:
            study.tell(trial, state=TrialState.FAIL)
        print(f"shrink trial: trial {trial.number} failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    values = values if isinstance(values, tuple) else (values,)
    if args.tell:
        study.tell(trial, list(values))
    print(" ".join(repr(float(v)) for v in values))
    return 0


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
    study._storage.set_trial_user_attr(trial._trial_id, FAIL_REASON_ATTR, reason)
    study.tell(trial.number, state=TrialState.FAIL)


def _log_to_stderr(text: str) -> None:
    print(text, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
