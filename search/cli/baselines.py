"""shrink baselines --data DIR --json OUT [--compressai-dir DIR]"""

from __future__ import annotations

import argparse
from pathlib import Path

from shrink.compression.baselines import BASELINE_CODECS, describe_baseline, run_baselines
from shrink.compression.bdrate import bd_rate_curves
from shrink.compression.data import load_images
from shrink.compression.rd import save_compressai, save_curves

from ._common import ArgumentParser, format_rd_table, output_dir, output_file, run_command


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shrink baselines", description="Baseline RD curves on an image folder.")
    parser.add_argument("--data", required=True, help="image folder, e.g. ../shared/data/kodak")
    parser.add_argument("--json", required=True, type=output_file, help="where to write the curves")
    parser.add_argument("--ratios", type=int, nargs="+", default=[2], choices=[2, 3, 4])
    parser.add_argument(
        "--codecs",
        nargs="+",
        default=list(BASELINE_CODECS),
        choices=BASELINE_CODECS,
        help="plain-codec curves (default: all); jpegxl is libjxl, a reference only (no training codec)",
    )
    parser.add_argument(
        "--compressai-dir",
        type=output_dir,
        help="also write each curve as CompressAI's results JSON, DIR/<curve>.json (one file per codec, as "
        "CompressAI publishes them), with encoding and decoding seconds per image",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    images = load_images(args.data)
    curves = run_baselines(images, ratios=tuple(args.ratios), codecs=tuple(args.codecs), progress=True)
    save_curves(args.json, curves, {"data": args.data, "images": len(images)})
    for name, curve in curves.items():
        print(f"\n{name}\n{format_rd_table(curve)}")
    if "jpeg" in curves:
        print("\nBD-rate vs jpeg        MS-SSIM dB     PSNR")
        for name, curve in curves.items():
            if name != "jpeg":
                ms = bd_rate_curves(curves["jpeg"], curve, "msssim_db")
                ps = bd_rate_curves(curves["jpeg"], curve, "psnr")
                print(f"{name:<20} {ms:+10.1f} % {ps:+8.1f} %")
    print(f"wrote {args.json}")
    if args.compressai_dir:
        write_compressai_files(Path(args.compressai_dir), curves, args.data, len(images))
    return 0


def write_compressai_files(folder: Path, curves: dict, data: str, n_images: int) -> None:
    """One CompressAI results file per curve, ``folder/<curve>.json``."""
    for name, curve in curves.items():
        path = folder / f"{name}.json"
        save_compressai(path, curve, describe_baseline(name, data, n_images))
        print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
