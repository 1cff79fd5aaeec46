"""shrink bdrate ANCHOR TEST [--anchor-curve NAME [NAME ...]] [--test-curve NAME]

ANCHOR and TEST are curve JSON files (shrink baselines / shrink eval) or codec family directories (shrink
export --family), whose curves are the envelope ("family") and each member's test curve."""

from __future__ import annotations

import argparse

from shrink.compression.bdrate import bd_rate_curves, quality_overlap, too_little_overlap
from shrink.compression.family import is_family, load_family
from shrink.compression.rd import RDCurve, load_curves, rate_at_metric
from shrink.compression.text import plain_text

from ._common import ArgumentParser, run_command


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shrink bdrate", description="BD-rate (%) of TEST against ANCHOR.")
    parser.add_argument("anchor", help="JSON from shrink baselines / shrink eval, or a codec family")
    parser.add_argument("test", help="JSON from shrink baselines / shrink eval, or a codec family")
    parser.add_argument(
        "--anchor-curve",
        nargs="+",
        default=None,
        metavar="NAME",
        help="curve(s) in ANCHOR, one table each (default: jpeg, and mozjpeg beside it where ANCHOR has one; "
        "or its only curve)",
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
        raise ValueError(f"{path} has no curve {name!r}; it has {', '.join(map(plain_text, curves))}")
    return [curves[name]]


def curves_at(path: str) -> dict[str, RDCurve]:
    """The curves of a JSON file, or of a codec family: its envelope ("family"), then each member's."""
    if not is_family(path):
        return load_curves(path)
    family = load_family(path)
    return {"family": family.envelope_curve(), **{m.name: m.curve for m in family.members}}


def default_anchor_curves(anchors: dict[str, RDCurve]) -> list[str | None]:
    """JPEG (Pillow's libjpeg), with mozjpeg, the JPEG that image optimisers serve, next to it: a gain over
    libjpeg alone overstates what a user who serves mozjpeg files sees."""
    if len(anchors) == 1:
        return [None]
    return ["jpeg", "mozjpeg"] if "mozjpeg" in anchors else ["jpeg"]


def run(args: argparse.Namespace) -> int:
    anchors = curves_at(args.anchor)
    tests = pick(curves_at(args.test), args.test_curve, args.test)
    for name in args.anchor_curve or default_anchor_curves(anchors):
        [anchor] = pick(anchors, name, args.anchor, default="jpeg")
        anchor_name = plain_text(anchor.name)  # names come from files: no control code reaches the terminal
        print(
            f"BD-rate vs {anchor_name} (negative = fewer bytes)   MS-SSIM dB     PSNR   "
            f"over MS-SSIM dB (= {anchor_name} bpp)"
        )
        for curve in tests:
            if curve.name == anchor.name and len(tests) > 1:
                continue
            ms, ps = _bd_rate(anchor, curve, "msssim_db"), _bd_rate(anchor, curve, "psnr")
            print(f"{plain_text(curve.name):<40} {ms:>12} {ps:>10}   {_over(anchor, curve)}")
    return 0


def _bd_rate(anchor: RDCurve, curve: RDCurve, metric: str) -> str:
    """The BD-rate as a table cell; curves that share no quality (a low-rate member against a codec whose
    lowest PSNR is above the member's highest) have none, which is a row's answer, not the table's; "n/a"
    where they share too little for one (:func:`too_little_overlap`: as the report, ``export --family``)."""
    if quality_overlap(anchor, curve, metric) is None:
        return "no overlap"
    if too_little_overlap(anchor, curve, metric):
        return "n/a"
    return f"{bd_rate_curves(anchor, curve, metric):+.2f} %"


def _over(anchor: RDCurve, curve: RDCurve) -> str:
    """The MS-SSIM dB range the BD-rate averages over, and the anchor's rates there."""
    overlap = quality_overlap(anchor, curve, "msssim_db")
    if overlap is None:
        return "-"
    low, high = overlap
    rates = f"{rate_at_metric(anchor, low):.3f}-{rate_at_metric(anchor, high):.3f} bpp"
    return f"{low:.2f}-{high:.2f} dB (= {rates})"


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
