"""shrink export --storage URL --study-name N [--trial T | --pareto] --out DIR"""

from __future__ import annotations

import argparse

import optuna

from shrink.search.export import chosen_trial, export_trial, pareto_trials
from shrink.search.storage import StorageError, open_storage, redact

from ._common import ArgumentParser, output_dir, run_command


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shrink export", description="Export trials as self-contained bundles.")
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study-name", required=True)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, help="one complete trial")
    which.add_argument(
        "--pareto", action="store_true", help="every trial on the Pareto front (best, if 1 objective)"
    )
    parser.add_argument("--out", required=True, type=output_dir, help="bundles go to OUT/trial-NNNNN/")
    parser.add_argument("--force", action="store_true", help="replace existing bundles")
    return parser


def load_study(url: str, name: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=open_storage(url, heartbeat_interval=None))
    except KeyError:
        raise StorageError(f"no study named {name!r} in {redact(url)}") from None


def run(args: argparse.Namespace) -> int:
    study = load_study(args.storage, args.study_name)
    trials = [chosen_trial(study, args.trial)] if args.trial is not None else pareto_trials(study)
    for trial in trials:
        path = export_trial(study, trial, args.out, overwrite=args.force)
        print(f"trial {trial.number}: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
