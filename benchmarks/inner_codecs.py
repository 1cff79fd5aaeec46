"""The inner JPEG encoder alone: libjpeg, mozjpeg and jpegli, every named table set, 4:2:0 and 4:4:4.

At full size (ratio 1) and as the downscale pipeline's compact image (bicubic down, the codec, bicubic up),
on one image folder, as BD-rate against libjpeg with Annex K tables and 4:2:0 at the same ratio.

This is the part of a study's inner-codec choice that needs no training: what the encoder itself gives the
RecCNN to start from. Select on dev (``shared/data/dev``), never on Kodak. All curves come from one run; codec
work runs in a thread pool over the images.

    .venv/bin/python benchmarks/inner_codecs.py --data ../shared/data/dev [--ratios 1 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from shrink.compression.baselines import downscale_curve
from shrink.compression.bdrate import safe_bd_rate
from shrink.compression.codecs import build_codec
from shrink.compression.config import CodecConfig
from shrink.compression.data import load_images
from shrink.compression.files import atomic_write_text
from shrink.compression.qtables import TABLE_SETS

GRID = list(range(10, 91, 10))


def arms() -> list[CodecConfig]:
    configs = [CodecConfig(name="jpeg")]  # the anchor: Annex K, 4:2:0
    for name in ("jpeg", "mozjpeg"):
        for subsampling in ("4:2:0", "4:4:4"):
            configs += [CodecConfig(name=name, tables=table, subsampling=subsampling) for table in TABLE_SETS]
    return [*configs, CodecConfig(name="jpegli")]


def label(config: CodecConfig) -> str:
    return config.name if config.tables is None else f"{config.name}/{config.tables}/{config.subsampling}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--ratios", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", help="write every BD-rate here")
    args = parser.parse_args()
    images = load_images(args.data)
    print(f"{args.data}: {len(images)} images, qualities {GRID[0]}..{GRID[-1]} step 10")
    results = []
    for ratio in args.ratios:
        start = time.perf_counter()
        curves = {
            label(c): downscale_curve(images, ratio, build_codec(c), GRID, name=label(c)) for c in arms()
        }
        anchor = curves["jpeg"]
        rows = []
        for name, curve in curves.items():
            msssim, _ = safe_bd_rate(anchor, curve, "msssim_db")
            psnr, _ = safe_bd_rate(anchor, curve, "psnr")
            rows.append({"ratio": ratio, "codec": name, "msssim_db": msssim, "psnr": psnr})
        rows.sort(key=lambda row: row["msssim_db"] if row["msssim_db"] is not None else 1e9)
        print(f"ratio {ratio} ({time.perf_counter() - start:.0f} s): BD-rate vs libjpeg Annex K 4:2:0")
        for row in rows[:8] + [r for r in rows[8:] if r["codec"] in ("jpegli", "mozjpeg/imagemagick/4:2:0")]:
            print(f"  {row['codec']:32s} MS-SSIM dB {row['msssim_db']:+7.2f} %   PSNR {row['psnr']:+7.2f} %")
        results += rows
    if args.json:
        atomic_write_text(
            Path(args.json), json.dumps({"data": args.data, "grid": GRID, "rows": results}, indent=1)
        )


if __name__ == "__main__":
    main()
