"""Bytes to reach a quality: `shrink compress --msssim Q` against JPEG, WebP and AVIF searched the same way.

For each image and target Q, every codec gets the smallest file whose decoded MS-SSIM (RGB, as evaluation
measures it) reaches Q, by the same binary search over its quality (:func:`lowest_quality_reaching`); ours is
:func:`choose` with ``msssim=Q``. Printed side by side from one run: mean bytes per codec over the images
every codec reached, ours as a ratio to each, and the encode time of each per image as a ratio to one plain
JPEG encode at quality 75.

    .venv/bin/python benchmarks/msssim_target.py --model zoo:cpu --data ../shared/data/kodak \\
        --targets 0.93 0.96 0.98 --json runs/msssim_target.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from shrink.compression.api import reconstruction_quality
from shrink.compression.choose import choose, lowest_quality_reaching
from shrink.compression.codecs import AvifCodec, Codec, JpegCodec, WebPCodec, to_uint8
from shrink.compression.data import load_images
from shrink.compression.files import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
BASELINES = {"jpeg": JpegCodec, "webp": WebPCodec, "avif": AvifCodec}


def baseline_bytes(codec: Codec, pixels, target: float) -> int | None:
    image = to_uint8(pixels.float() / 255)

    def value_of(data: bytes) -> float:
        return reconstruction_quality(codec.decode(data), pixels)[1]

    found = lowest_quality_reaching(lambda quality: codec.encode(image, quality), value_of, target)
    return None if found is None else len(found[0])


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def jpeg_encode_seconds(pixels) -> float:
    image = to_uint8(pixels.float() / 255)
    return timed(JpegCodec().encode, image, 75)[1]


def measure(args: argparse.Namespace) -> dict:
    images = load_images(args.data)[: args.limit]
    rows = []
    for image in images:
        base = jpeg_encode_seconds(image.pixels)
        for target in args.targets:
            row = {"image": image.name, "target": target, "jpeg_q75_encode_s": base}
            choice, seconds = timed(_ours, image.pixels, args, target)
            row["shrink"] = None if choice is None else len(choice.data)
            row["shrink_s"] = seconds
            for name, codec in BASELINES.items():
                row[name], row[f"{name}_s"] = timed(baseline_bytes, codec(), image.pixels, target)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {"model": args.model, "data": str(args.data), "effort": args.effort, "rows": rows}


def _ours(pixels, args: argparse.Namespace, target: float):
    try:
        return choose(pixels, args.model, msssim=target, effort=args.effort)
    except ValueError:  # unreachable for this image
        return None


def summary(result: dict, targets: list[float]) -> list[str]:
    codecs = ["shrink", *BASELINES]
    lines = [f"{'target':>7} {'images':>6} " + " ".join(f"{c + ' bytes':>12}" for c in codecs)
             + " " + " ".join(f"{'vs ' + c:>9}" for c in BASELINES)
             + " " + " ".join(f"{c + ' enc':>11}" for c in codecs)]  # fmt: skip
    for target in targets:
        rows = [r for r in result["rows"] if r["target"] == target]
        reached = [r for r in rows if all(r[c] is not None for c in codecs)]
        if not reached:
            lines.append(f"{target:>7} {0:>6} (no image reached by every codec)")
            continue
        mean = {c: statistics.mean(r[c] for r in reached) for c in codecs}
        encode = {c: statistics.mean(r[f"{c}_s"] / r["jpeg_q75_encode_s"] for r in rows) for c in codecs}
        lines.append(
            f"{target:>7} {len(reached):>6} " + " ".join(f"{mean[c]:>12,.0f}" for c in codecs) + " "
            + " ".join(f"{100 * (mean['shrink'] / mean[c] - 1):>+8.1f}%" for c in BASELINES) + " "
            + " ".join(f"{encode[c]:>10.0f}x" for c in codecs)
        )  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoo:cpu", help="bundle, family, checkpoint or zoo:NAME")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "kodak")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.93, 0.96, 0.98])
    parser.add_argument("--effort", type=int, default=2)
    parser.add_argument("--limit", type=int, help="the first N images only")
    parser.add_argument("--json", type=Path, help="where to write every row and the summary")
    args = parser.parse_args()
    result = measure(args)
    lines = summary(result, args.targets)
    print("\n".join(lines))
    print("(bytes: mean over the images every codec reached; vs: ours against it; enc: encode time per image "
          "as a multiple of one JPEG q75 encode)")  # fmt: skip
    if args.json:
        atomic_write_text(args.json, json.dumps({**result, "summary": lines}, indent=1))


if __name__ == "__main__":
    main()
