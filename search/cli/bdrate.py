"""shrink bdrate ANCHOR.json TEST.json [--anchor-curve NAME] [--test-curve NAME]"""

from __future__ import annotations

import argparse

from shrink.compression.bdrate import bd_rate_curves
from shrink.compression.rd import load_curves

from ._common import ArgumentParser, run_command


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shrink bdrate", description="BD-rate (%) of TEST against ANCHOR.")
    parser.add_argument("anchor", help="JSON from shrink baselines / shrink eval")
    parser.add_argument("test", help="JSON from shrink baselines / shrink eval")
    parser.add_argument(
        "--anchor-curve", default=None, help="curve in ANCHOR (default: jpeg, or its only one)"
    )
    parser.add_argument("--test-curve", default=None, help="curve in TEST (default: every curve)")
    return parser


def pick(curves: dict, name: str | None, path: str, default: str | None = None) -> list:
    if name is None and len(curves) == 1:
        return list(curves.values())
    name = name or default
    if name is None:
        return list(curves.values())
    if name not in curves:
        raise ValueError(f"{path} has no curve {name!r}; it has {', '.join(curves)}")
    return [curves[name]]


def run(args: argparse.Namespace) -> int:
    [anchor] = pick(load_curves(args.anchor), args.anchor_curve, args.anchor, default="jpeg")
    tests = pick(load_curves(args.test), args.test_curve, args.test)
    print(f"BD-rate vs {anchor.name} (negative = fewer bytes)   MS-SSIM dB     PSNR")
    for curve in tests:
        if curve.name == anchor.name and len(tests) > 1:
            continue
        ms = bd_rate_curves(anchor, curve, "msssim_db")
        ps = bd_rate_curves(anchor, curve, "psnr")
        print(f"{curve.name:<40} {ms:+10.2f} % {ps:+8.2f} %")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
