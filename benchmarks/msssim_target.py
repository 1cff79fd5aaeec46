"""Bytes to reach a quality: `shrink compress --msssim Q` against JPEG, WebP and AVIF searched the same way.

For each image and target Q, every codec gets the smallest file whose decoded MS-SSIM (RGB, as evaluation
measures it) reaches Q, by the same binary search over its quality (:func:`lowest_quality_reaching`); ours is
:func:`choose` with ``msssim=Q``. Printed side by side from one run: mean bytes per codec over the images
every codec reached, ours (at each ``--efforts`` level: a family's members tried per image) as a ratio to
each, and the encode time of each per image as a ratio to one plain JPEG encode at quality 75.

    .venv/bin/python benchmarks/msssim_target.py --model zoo:cpu --data ../shared/data/kodak \\
        --targets 0.93 0.96 0.98 --efforts 1 2 --json runs/msssim_target.json
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
            for effort in args.efforts:
                choice, seconds = timed(_ours, image.pixels, args.model, target, effort)
                row[ours(effort)] = None if choice is None else len(choice.data)
                row[f"{ours(effort)}_s"] = seconds
            for name, codec in BASELINES.items():
                row[name], row[f"{name}_s"] = timed(baseline_bytes, codec(), image.pixels, target)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {"model": args.model, "data": str(args.data), "efforts": args.efforts, "rows": rows}


def ours(effort: int) -> str:
    return f"shrink-e{effort}"


def _ours(pixels, model: str, target: float, effort: int):
    try:
        return choose(pixels, model, msssim=target, effort=effort)
    except ValueError:  # unreachable for this image
        return None


def summary(result: dict, targets: list[float]) -> list[str]:
    mine = [ours(effort) for effort in result["efforts"]]
    codecs = [*mine, *BASELINES]
    lines = [f"{'target':>7} {'images':>6} {'codec':>10} {'bytes':>9} {'encode':>9} "
             + " ".join(f"{'vs ' + c:>9}" for c in BASELINES)]  # fmt: skip
    for target in targets:
        rows = [r for r in result["rows"] if r["target"] == target]
        reached = [r for r in rows if all(r[c] is not None for c in codecs)]
        if not reached:
            lines.append(f"{target:>7} {0:>6} (no image reached by every codec)")
            continue
        mean = {c: statistics.mean(r[c] for r in reached) for c in codecs}
        encode = {c: statistics.mean(r[f"{c}_s"] / r["jpeg_q75_encode_s"] for r in rows) for c in codecs}
        for c in codecs:
            versus = [
                f"{100 * (mean[c] / mean[b] - 1):>+8.1f}%" if c in mine else f"{'':>9}" for b in BASELINES
            ]
            lines.append(
                f"{target:>7} {len(reached):>6} {c:>10} {mean[c]:>9,.0f} {encode[c]:>8.0f}x "
                + " ".join(versus)
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoo:cpu", help="bundle, family, checkpoint or zoo:NAME")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "kodak")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.93, 0.96, 0.98])
    parser.add_argument("--efforts", type=int, nargs="+", default=[2], help="compress --effort levels")
    parser.add_argument("--limit", type=int, help="the first N images only")
    parser.add_argument("--json", type=Path, help="where to write every row and the summary")
    args = parser.parse_args()
    result = measure(args)
    lines = summary(result, args.targets)
    print("\n".join(lines))
    print("(bytes: mean over the images every codec reached; vs: ours against it; encode: time per image "
          "as a multiple of one JPEG q75 encode)")  # fmt: skip
    if args.json:
        atomic_write_text(args.json, json.dumps({**result, "summary": lines}, indent=1))


if __name__ == "__main__":
    main()
