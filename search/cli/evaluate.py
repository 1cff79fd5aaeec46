"""shrink eval CHECKPOINT_OR_BUNDLE --data DIR [--qualities Q ...] --json OUT [--compressai-json OUT]"""

from __future__ import annotations

import argparse

from shrink.compression.baselines import DEFAULT_QUALITIES
from shrink.compression.cost import config_cost, format_cost
from shrink.compression.evaluate import evaluate_file
from shrink.compression.rd import save_compressai, save_curves

from ._common import ArgumentParser, format_rd_table, output_file, run_command


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="shrink eval", description="Evaluate a checkpoint or an export bundle on full images."
    )
    parser.add_argument(
        "checkpoint",
        help="a training checkpoint (last.ckpt / best.ckpt), an export bundle directory, or zoo:NAME",
    )
    parser.add_argument("--data", required=True, help="image folder, e.g. ../shared/data/kodak")
    parser.add_argument(
        "--qualities",
        type=int,
        nargs="+",
        default=list(DEFAULT_QUALITIES["down-jpeg"]),
        help="codec qualities (default: the downscale baseline's grid, for comparable BD-rates)",
    )
    parser.add_argument("--json", required=True, type=output_file, help="where to write the RD curve")
    parser.add_argument("--name", default="shrink", help="curve name in the JSON")
    parser.add_argument(
        "--compressai-json",
        type=output_file,
        help="also write the curve as CompressAI's results JSON, with encode and decode seconds per image",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    result = evaluate_file(args.checkpoint, args.data, args.qualities, name=args.name, progress=True)
    save_curves(args.json, {result.curve.name: result.curve}, result.meta)
    print(format_rd_table(result.curve, result.jpeg))
    print(format_cost(config_cost(result.config.model)) + " (learned layers; bicubic resampling not counted)")
    print(f"wrote {args.json}")
    if args.compressai_json:
        save_compressai(args.compressai_json, result.curve, result.description)
        print(f"wrote {args.compressai_json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
