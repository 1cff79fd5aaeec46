"""shrink eval CHECKPOINT_OR_BUNDLE --data DIR [--qualities Q ...] --json OUT [--compressai-json OUT]
shrink eval FAMILY --data DIR [--targets T ...] [--efforts N ...] --json OUT"""

from __future__ import annotations

import argparse

from shrink.compression.baselines import DEFAULT_QUALITIES
from shrink.compression.cost import config_cost, format_cost
from shrink.compression.data import load_images
from shrink.compression.evaluate import choice_targets, evaluate_choice, evaluate_file
from shrink.compression.family import Family, is_family, load_family
from shrink.compression.rd import RDCurve, save_compressai, save_curves
from shrink.compression.text import LINE_LIMIT, plain_text

from ._common import ArgumentParser, format_rd_table, output_file, quality_arg, run_command


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="shrink eval", description="Evaluate a checkpoint or an export bundle on full images."
    )
    parser.add_argument(
        "checkpoint",
        help="a training checkpoint (last.ckpt / best.ckpt), an export bundle directory, zoo:NAME, or a "
        "codec family (measured as its encoder's per-image choice at each target rate)",
    )
    parser.add_argument("--data", required=True, help="image folder, e.g. ../shared/data/kodak")
    parser.add_argument(
        "--qualities",
        type=quality_arg,
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
    family = parser.add_argument_group("a codec family")
    family.add_argument(
        "--targets",
        type=float,
        nargs="+",
        help="target bpp of shrink compress --bpp T (default: 10, geometric over the members' test curves)",
    )
    family.add_argument(
        "--efforts",
        type=int,
        nargs="+",
        default=[1, 3],
        help="compress --effort levels, one curve each (1: the member of the best mean curve, as before "
        "per-image choice; N: the best of N members for each image)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    if is_family(args.checkpoint):
        return run_family(args)
    result = evaluate_file(args.checkpoint, args.data, args.qualities, name=args.name, progress=True)
    save_curves(args.json, {result.curve.name: result.curve}, result.meta)
    print(format_rd_table(result.curve, result.jpeg))
    print(format_cost(config_cost(result.config.model)) + " (learned layers; bicubic resampling not counted)")
    print(f"wrote {args.json}")
    if args.compressai_json:
        save_compressai(args.compressai_json, result.curve, result.description)
        print(f"wrote {args.compressai_json}")
    return 0


def run_family(args: argparse.Namespace) -> int:
    if args.compressai_json:
        raise ValueError("--compressai-json writes one curve; a family's evaluation writes one per effort")
    family = load_family(args.checkpoint)
    targets = args.targets or choice_targets(family)
    if not all(0 < target < 64 for target in targets) or min(args.efforts) < 1:
        raise ValueError(
            f"targets are bpp in (0, 64) and efforts at least 1, got {targets} and {args.efforts}"
        )
    images = load_images(args.data)
    curves = envelope_on(family, args.data, f"{args.name}-envelope")
    for effort in args.efforts:
        name = f"{args.name}-effort{effort}"
        curves[name], missed = evaluate_choice(family.path, images, targets, effort, name, progress=True)
        if missed:
            print(f"{name}: targets {missed} bpp left out (some image cannot be compressed that small)")
        if not curves[name].points:
            raise ValueError(f"no target in {targets} bpp can be met on every image of {args.data}")
        print(f"{name}:\n{format_rd_table(curves[name])}")
    meta = {"family": str(args.checkpoint), "family_sha256": family.sha256, "data": str(args.data)}
    save_curves(args.json, curves, meta | {"targets": " ".join(f"{t:g}" for t in targets)})
    print(f"wrote {args.json}")
    return 0


def envelope_on(family: Family, data: str, name: str) -> dict[str, RDCurve]:
    """The envelope of the members' mean curves, only where they were measured on ``data`` itself: beside
    curves measured on ``data``, a curve from another image set would read as one of them."""
    if family.measured_on(data):
        return {name: family.envelope_curve(name)}
    test = plain_text(family.test, LINE_LIMIT)  # from the family's file
    print(f"{name} left out: the members' curves were measured on {test}, not on {data}")
    return {}


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
