"""shrink trial --storage URL --study-name N --trial-number T: run one trial asked with ``optuna ask``.

For external schedulers (SLURM arrays): ``optuna ask --search-space "$(shrink space SPEC)"`` creates the
trial, this command trains it and records its attributes, then prints the values for ``optuna tell``
(``--tell`` finishes it here instead).
"""

from __future__ import annotations

import argparse
import sys

import optuna
from optuna.trial import TrialState

from shrink.search.spec import load_spec
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
    trials = study.get_trials(deepcopy=False)
    if not 0 <= args.trial_number < len(trials):
        raise ValueError(f"study {args.study_name!r} has no trial number {args.trial_number}")
    frozen = trials[args.trial_number]
    if frozen.state != TrialState.RUNNING:
        raise ValueError(
            f"trial {args.trial_number} is {frozen.state.name}, not RUNNING (ask it with optuna ask)"
        )
    trial = optuna.Trial(study, frozen._trial_id)
    # stdout carries only the values (for `optuna tell --values $(shrink trial ...)`); logs go to stderr
    run_root = args.run_root or default_run_root(args.storage)
    hooks = dashboard_hooks(handle, run_root)
    runner = TrialRunner(handle, run_root, log=_log_to_stderr, on_complete=hooks["on_complete"])
    try:
        values = runner(trial)
    except Exception as error:
        if args.tell:
            study.tell(trial, state=TrialState.FAIL)
        print(f"shrink trial: trial {trial.number} failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except optuna.TrialPruned as pruned:
        print(f"pruned: {pruned}", file=sys.stderr)
        if args.tell:
            study.tell(trial, state=TrialState.PRUNED)
        print("state pruned")
        return 0
    values = values if isinstance(values, tuple) else (values,)
    if args.tell:
        study.tell(trial, list(values))
    print(" ".join(repr(float(v)) for v in values))
    return 0


def _log_to_stderr(text: str) -> None:
    print(text, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
