"""shrink launch --storage URL --study-name N (--gpus 0,1,2,3 | --workers K) [worker options]"""

from __future__ import annotations

import argparse

from shrink.search.launch import cuda_device_count, launch, parse_gpus

from ._common import ArgumentParser, run_command
from .worker import STORAGE_ENV, add_study_arguments, add_worker_limits, worker_arguments


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="shrink launch", description="One worker process per GPU (or K CPU workers) on one study."
    )
    add_study_arguments(parser)
    add_worker_limits(parser)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--gpus", help="comma-separated GPU ids, one worker each (CUDA_VISIBLE_DEVICES)")
    where.add_argument("--workers", type=int, help="number of CPU worker processes")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be >= 1")
    gpus = parse_gpus(args.gpus, cuda_device_count()) if args.gpus is not None else None
    return launch(worker_arguments(args), gpus, args.workers or 0, env={STORAGE_ENV: args.storage})


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
