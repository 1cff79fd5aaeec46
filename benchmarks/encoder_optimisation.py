"""What a ComCNN could add, as an upper bound: the compact image optimised per image at the encoder
(:mod:`shrink.compression.optimise`) against the plain encoder, side by side in one run.

For every image and quality of the grid the plain file is written (step 0), then one optimisation path runs
to the largest step count; the best iterate at each requested step count is written with the real codec at the
same quality and kept only where it measures better (``slope * ln(bytes) - dB``, as ``shrink compress
--optimise`` keeps it), so each step count is what ``--optimise N`` would write. The steps run at a constant
learning rate, so the iterate after N steps does not depend on the largest count. JPEG (Pillow), mozjpeg
and WebP run on the same images and qualities. It prints, per loss (MS-SSIM dB, MSE) and step count:
BD-rate (MS-SSIM dB and PSNR) vs the plain encoder, vs JPEG, mozjpeg and WebP, and the encode time per image
as a multiple of the plain encode, and writes every curve to ``--json`` (``shrink bdrate`` reads it).

    .venv/bin/python benchmarks/encoder_optimisation.py --data ../shared/data/kodak --every 3 \
        --qualities 15 35 60 85 --steps 0 10 30 100 --json results/2026-12-06-encoder-optimisation-kodak.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from shrink.compression.api import compress_image, decompress_image, open_bundle
from shrink.compression.baselines import codec_curve
from shrink.compression.bdrate import safe_bd_rate
from shrink.compression.codecs import to_uint8
from shrink.compression.data import load_images
from shrink.compression.optimise import ImageEncoder, optimisation_path, rd_objective
from shrink.compression.rd import curve_from_rows, measure, save_curves

ANCHORS = ("jpeg", "mozjpeg", "webp")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="zoo:cpu")
    parser.add_argument("--data", default="../shared/data/kodak")
    parser.add_argument("--every", type=int, default=1, help="every Nth image of the folder (1: all)")
    parser.add_argument("--qualities", type=int, nargs="+", default=[15, 35, 60, 85])
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 10, 30, 100])
    parser.add_argument("--losses", nargs="+", default=["msssim", "mse"], choices=["msssim", "mse"])
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def row(name: str, quality: int, data: bytes, bundle, pixels: torch.Tensor, seconds: dict) -> dict:
    x_hat = torch.from_numpy(decompress_image(data, bundle)).permute(2, 0, 1).float()[None] / 255.0
    return measure(name, quality, len(data), x_hat, pixels.float()[None] / 255.0) | seconds


def run_image(image, bundle, qualities, steps, loss: str) -> dict[int, list[dict]]:
    """Per step count, the rows (one per quality) of the files ``--optimise N`` would write, with the encode
    time of that file and of the plain one."""
    pixels = image.pixels
    rows: dict[int, list[dict]] = {n: [] for n in steps}
    for quality in qualities:
        began = time.perf_counter()
        plain = compress_image(pixels, bundle, quality=quality, tile=0)
        plain_s = time.perf_counter() - began
        encoder = ImageEncoder(bundle, pixels, loss, 0)
        slope = encoder.slope(encoder.writer(to_uint8(encoder.start[0])), quality)
        plain_db = encoder.db(plain)
        path = optimisation_path(
            bundle.model, pixels, encoder.start, bundle.jpeg_codec(), quality, slope, max(steps), loss
        )
        other_checks = 0.0  # the checks of smaller step counts, which ``--optimise N`` would not run
        for step in path:
            if step.step not in rows:
                continue
            checked = time.perf_counter()
            candidate = encoder.writer(to_uint8(step.best[0]))(quality)
            candidate_db = encoder.db(candidate)
            better = rd_objective(len(candidate), candidate_db, slope) < rd_objective(
                len(plain), plain_db, slope
            )
            now = time.perf_counter()
            seconds = now - began - other_checks
            other_checks += now - checked
            kept = candidate if better and step.step > 0 else plain
            times = {"encode_s": plain_s if step.step == 0 else seconds, "plain_encode_s": plain_s}
            rows[step.step].append(row(image.name, quality, kept, bundle, pixels, times))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bundle = open_bundle(args.model)
    images = load_images(args.data)[:: args.every]
    names = ", ".join(image.name for image in images)
    print(f"{len(images)} images of {args.data} ({names}); qualities {args.qualities}; steps {args.steps}")
    curves = {name: codec_curve(images, name, args.qualities) for name in ANCHORS}
    ratios: dict[str, float] = {}
    for loss in args.losses:
        per_step: dict[int, list[dict]] = {n: [] for n in args.steps}
        for index, image in enumerate(images):
            for n, rows in run_image(image, bundle, args.qualities, args.steps, loss).items():
                per_step[n].extend(rows)
            print(f"  {loss}: image {index + 1}/{len(images)} done", file=sys.stderr, flush=True)
        for n, rows in per_step.items():
            name = f"opt-{loss}-{n}"
            curves[name] = curve_from_rows(name, [without_times(r) for r in rows])
            ratios[name] = sum(r["encode_s"] for r in rows) / sum(r["plain_encode_s"] for r in rows)
    print_table(curves, ratios, args)
    if args.json is not None:
        command = " ".join(["benchmarks/encoder_optimisation.py", *(argv or sys.argv[1:])])
        save_curves(args.json, curves, {"command": command, "encode_time_ratio": ratios})
    return 0


def bd(anchor, test, metric: str) -> str:
    value, _ = safe_bd_rate(anchor, test, metric)
    return "n/a" if value is None else f"{value:+.2f} %"


def without_times(row: dict) -> dict:
    return {key: value for key, value in row.items() if key not in ("encode_s", "plain_encode_s")}


def print_table(curves, ratios, args) -> None:
    print("\nBD-rate (MS-SSIM dB / PSNR); encode time as a multiple of the plain encoder's")
    print("| loss | steps | vs plain | vs JPEG | vs mozjpeg | vs WebP | encode time |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for loss in args.losses:
        plain = curves[f"opt-{loss}-0"]
        for n in args.steps:
            curve = curves[f"opt-{loss}-{n}"]
            cells = [
                f"{bd(anchor, curve, 'msssim_db')} / {bd(anchor, curve, 'psnr')}"
                for anchor in (plain, *(curves[name] for name in ANCHORS))
            ]
            print(f"| {loss} | {n} | " + " | ".join(cells) + f" | {ratios[f'opt-{loss}-{n}']:.1f}x |")


if __name__ == "__main__":
    raise SystemExit(main())
