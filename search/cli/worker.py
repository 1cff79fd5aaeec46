"""shrink worker --storage URL --study-name N [--spec SPEC] [--n-trials K] [--timeout S]"""

from __future__ import annotations

import argparse
import os

from shrink.search.spec import load_spec
from shrink.search.storage import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S
from shrink.search.study import attach
from shrink.search.trial_runner import default_run_root
from shrink.search.worker import Worker

from ._common import MAX_COUNT, ArgumentParser, int_in, positive_float, positive_int, run_command
from ._hooks import dashboard_hooks

STORAGE_ENV = "SHRINK_STORAGE"


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    from_env = os.environ.get(STORAGE_ENV)
    parser.add_argument(
        "--storage",
        required=from_env is None,
        default=from_env,
        help=f"sqlite:///FILE, postgresql+psycopg://..., journal:FILE (default: ${STORAGE_ENV})",
    )
    parser.add_argument("--study-name", required=True)
    parser.add_argument(
        "--spec", help="study spec TOML: checked against the stored one (stored if the study has none)"
    )
    parser.add_argument("--run-root", help="trial folders (checkpoints); default: beside the storage file")


def add_worker_limits(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n-trials", type=positive_int, help="stop after this many trials (default: study budget)"
    )
    parser.add_argument("--timeout", type=positive_float, help="start no new trial after this many seconds")
    parser.add_argument(
        "--heartbeat",
        type=int_in(1, 86_400),
        nargs=2,
        default=[HEARTBEAT_INTERVAL_S, GRACE_PERIOD_S],
        metavar=("INTERVAL", "GRACE"),
        help="RDB heartbeat and grace period (s): a dead worker's trial is re-queued after GRACE",
    )


def worker_arguments(args: argparse.Namespace) -> list[str]:
    """The worker command line that reproduces ``args`` (what launch passes to each worker)."""
    argv = ["--study-name", args.study_name]  # the storage URL travels in $SHRINK_STORAGE: no password in ps
    for flag in ("spec", "run_root", "n_trials", "timeout"):
        value = getattr(args, flag)
        if value is not None:
            argv += [f"--{flag.replace('_', '-')}", str(value)]
    return argv + ["--heartbeat", *(str(v) for v in args.heartbeat)]


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="shrink worker",
        description="Run trials until the study's budget is reached. With no WAITING trial left, it waits "
        "for the RUNNING ones: a dead worker's is re-queued when its heartbeat grace runs out, and trained "
        "here.",
    )
    add_study_arguments(parser)
    add_worker_limits(parser)
    parser.add_argument(
        "--worker-index",
        type=int_in(0, MAX_COUNT),
        default=0,
        help="offsets the sampler seed (set by launch)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec) if args.spec else None
    handle = attach(
        args.storage,
        args.study_name,
        spec,
        sampler_seed_offset=args.worker_index,
        heartbeat=tuple(args.heartbeat),
    )
    run_root = args.run_root or default_run_root(args.storage)
    worker = Worker(handle, run_root, **dashboard_hooks(handle, run_root))
    result = worker.run(n_trials=args.n_trials, timeout=args.timeout)
    states = list(result.trials.values())
    counts = ", ".join(f"{states.count(state)} {state}" for state in sorted(set(states)))
    print(f"worker done: {len(states)} trials ({counts})")
    return result.exit_code


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
