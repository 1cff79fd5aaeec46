"""shrink launch --storage URL --study-name N (--gpus 0,1 [--workers-per-gpu N] | --workers K) [options]

The placement rules (ids within an inherited CUDA_VISIBLE_DEVICES, log prefixes) are in shrink.search.launch.
"""

from __future__ import annotations

import argparse
import os

from shrink.search.launch import cuda_device_count, gpu_slots, launch, parse_gpus, spread_slots

from ._common import ArgumentParser, int_in, positive_number, run_command
from .worker import STORAGE_ENV, add_study_arguments, add_worker_limits, worker_arguments

MAX_WORKERS = 256  # processes on one machine
MAX_FIRST_INDEX = 1 << 20  # nodes x MAX_WORKERS, with room


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="shrink launch",
        description="Worker processes on one study: on the given GPUs, or K spread over the visible GPUs "
        "(CPU workers when there are none).",
    )
    add_study_arguments(parser)
    add_worker_limits(parser)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--gpus",
        help="comma-separated GPU ids (indices into the GPUs the launcher sees, or UUIDs), one worker each "
        "(CUDA_VISIBLE_DEVICES); an id listed twice gets two",
    )
    where.add_argument(
        "--workers",
        type=positive_number(int, MAX_WORKERS),
        help="number of worker processes, round-robin over the visible GPUs, if any",
    )
    parser.add_argument(
        "--workers-per-gpu",
        type=positive_number(int, MAX_WORKERS),
        metavar="N",
        help="with --gpus: N workers on each (default 1)",
    )
    parser.add_argument(
        "--first-worker-index",
        type=int_in(0, MAX_FIRST_INDEX),
        default=0,
        metavar="I",
        help="the first worker's --worker-index (its sampler seed offset); several nodes on one study give "
        "each its own range (the Slurm job passes its task number times 256)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    if args.workers_per_gpu is not None and args.gpus is None:
        raise ValueError("--workers-per-gpu goes with --gpus (--workers K spreads K workers over the GPUs)")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if args.gpus is not None:
        device_count = cuda_device_count() if visible is None else None  # ids then index `visible` instead
        gpus = parse_gpus(args.gpus, device_count, visible)
        slots = gpu_slots(gpus, args.workers_per_gpu or 1, visible)
    else:
        slots = spread_slots(args.workers, cuda_device_count(), visible)
    return launch(
        worker_arguments(args), slots, env={STORAGE_ENV: args.storage}, first_index=args.first_worker_index
    )


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
