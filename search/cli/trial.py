"""shrink trial --storage URL --study-name N --trial-number T: run one trial asked with ``optuna ask``.

For external schedulers (SLURM arrays): ``optuna ask --search-space "$(shrink space SPEC)"`` pops one of the
budget's tickets (or creates a trial beyond them, which is refused here and failed as ``over_budget``), this
command trains it and records its attributes, then prints the values for ``optuna tell`` (``--tell``
finishes it here instead). While it trains, the trial's heartbeat is recorded, so a worker re-queues it if
this process dies; SIGINT/SIGTERM checkpoint it and re-queue it (exit code 128 + the signal), whatever
``--tell`` says, so that it is never left RUNNING. The logic lives in :mod:`shrink.search.asked`.
"""

from __future__ import annotations

import argparse
import sys

from shrink.search.asked import run_asked_trial
from shrink.search.spec import load_spec
from shrink.search.study import attach
from shrink.search.trial_runner import TrialRunner, default_run_root

from ._common import MAX_COUNT, ArgumentParser, int_in, run_command
from ._hooks import dashboard_hooks
from .worker import add_study_arguments


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shrink trial", description="Run one RUNNING trial created by `optuna ask`.")
    add_study_arguments(parser)
    parser.add_argument("--trial-number", type=int_in(0, MAX_COUNT), required=True)
    parser.add_argument(
        "--tell", action="store_true", help="finish the trial here (else print values for optuna tell)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    handle = attach(args.storage, args.study_name, load_spec(args.spec) if args.spec else None)
    # stdout carries only the values (for `optuna tell --values $(shrink trial ...)`); logs go to stderr
    run_root = args.run_root or default_run_root(args.storage)
    hooks = dashboard_hooks(handle, run_root)
    runner = TrialRunner(handle, run_root, log=_log_to_stderr, on_complete=hooks["on_complete"])
    outcome = run_asked_trial(handle, args.trial_number, runner, tell=args.tell)
    if outcome.pruned is not None:
        print(f"pruned: {outcome.pruned}", file=sys.stderr)
        print("state pruned")
    elif outcome.interrupted is not None:
        interrupted = f"trial {outcome.number} {outcome.interrupted}"
        print(f"shrink trial: {interrupted}; re-queued to resume", file=sys.stderr)
    elif outcome.error is not None:
        error = f"{type(outcome.error).__name__}: {outcome.error}"
        print(f"shrink trial: trial {outcome.number} failed: {error}", file=sys.stderr)
    else:
        print(" ".join(repr(float(v)) for v in outcome.values))
    return outcome.exit_code


def _log_to_stderr(text: str) -> None:
    print(text, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
