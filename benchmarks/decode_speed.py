"""Decode speed per megapixel: ``decompress_image`` against Pillow's JPEG, WebP and AVIF decodes, one run.

Each image of ``--data`` (default: Kodak, ``../shared/data/kodak`` beside the checkout) is compressed once
with our codec (:func:`api.compress_image` at ``--quality``, default the bundle's), and once by each of
Pillow's JPEG (4:2:0, optimized), WebP and AVIF (their training-codec settings: WebP method 4, AVIF speed 6)
at the highest quality whose file fits in our file's bytes: matched bytes. Then the decodes take turns, image
by image, ``--repeat`` times each after one warm-up call: ours is the whole decompress path from the file's
bytes to the HxWx3 uint8 array (header check, Pillow's decode of the compact JPEG, bicubic upscale, RecCNN,
8-bit rounding) with the bundle already open; ``ours (plain forward)`` is the same path with ``fast=False``
(the RecCNN's plain eager forward, what decompress ran before the fused path); the baselines are
:meth:`Codec.decode` (Pillow to an RGB array). Per codec: the median over repeats of each image, summed over
images and divided by their megapixels (ms/MP; beside it the same with the fastest repeat, which load from
other processes touches least), and the median per image; ``it / ours``: its time over ours.

Cold: each of our paths once more in a fresh process (``--child``): ``open_bundle`` and the first
``decompress_image`` timed apart (the first call pays oneDNN's kernel generation and the plan's set-up), then
a second call.

``--model``: a bundle folder, a training checkpoint, or whatever :func:`api.open_bundle` accepts. Without it,
a random-weight model of ``studies/presets/cpu.toml``'s architecture is saved as a bundle in a temp folder
(:func:`preset_bundle`; the preset's trained bundle costs the same: speed does not depend on weight values).

    .venv/bin/python benchmarks/decode_speed.py [--model PATH] [--data DIR] [--limit N] [--repeat 5]
        [--quality Q] [--threads N] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from shrink.compression.api import compress_image, decompress_image, open_bundle
from shrink.compression.codecs import build_codec
from shrink.compression.config import CodecConfig
from shrink.compression.container import highest_quality_within
from shrink.compression.data import image_paths, read_image
from shrink.compression.inference import fused_convolutions

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "kodak"
BASELINES = ("jpeg", "webp", "avif")
OURS, PLAIN = "ours", "ours (plain forward)"


def preset_bundle(folder: Path) -> Path:
    """A random-weight model of the CPU preset's architecture, saved as a bundle: He init, and the RecCNN's
    zero-initialised head given small random weights, so its residual (and the fast path's agreement with
    the plain one) is not trivially zero."""
    from shrink.compression.bundle import save_bundle
    from shrink.compression.config import load_config
    from shrink.compression.models import build_model

    config = load_config(REPO / "studies" / "presets" / "cpu.toml")
    torch.manual_seed(0)
    model = build_model(config.model)
    with torch.no_grad():
        model.reccnn.head.weight.normal_(std=0.02)
    return save_bundle(folder / "cpu-preset", model, config, {"untrained": True})


def child(model: str, path: str, fast: bool, threads: int) -> None:
    """A fresh process: open the bundle, decompress ``path`` twice; prints the three times as JSON."""
    if threads:
        torch.set_num_threads(threads)
    data = Path(path).read_bytes()
    start = time.perf_counter()
    bundle = open_bundle(model)
    opened = time.perf_counter()
    decompress_image(data, bundle, fast=fast)
    first = time.perf_counter()
    decompress_image(data, bundle, fast=fast)
    second = time.perf_counter()
    print(json.dumps({"open": opened - start, "first": first - opened, "second": second - first}))


def cold(model: str, path: Path, fast: bool, threads: int) -> dict:
    command = [sys.executable, __file__, "--child", model, str(path), str(int(fast)), str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(f"cold run failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def timed(decode, repeat: int) -> tuple[float, float]:
    """(median, fastest) of ``repeat`` calls after one warm-up call, in seconds."""
    decode()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        decode()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def encode_all(paths: list[Path], bundle, quality: int | None) -> list[dict]:
    """Per image: its megapixels and each codec's file (ours, then the baselines at matched bytes)."""
    codecs = {name: build_codec(CodecConfig(name=name)) for name in BASELINES}
    images = []
    for path in paths:
        pixels = read_image(path)
        array = pixels.permute(1, 2, 0).numpy()
        ours = compress_image(pixels, bundle, quality=quality)
        files = {OURS: ours, PLAIN: ours}
        for name, codec in codecs.items():
            encode = lambda q, c=codec, a=array: c.encode(a, q)  # noqa: E731
            files[name] = highest_quality_within(len(ours), encode)[1]
        images.append({"name": path.name, "mp": array.shape[0] * array.shape[1] / 1e6, "files": files})
    return images


def measure(images: list[dict], bundle, repeat: int) -> dict[str, list[tuple[float, float]]]:
    """Per codec, (median, fastest) decode seconds of each image; the codecs take turns image by image."""
    codecs = {name: build_codec(CodecConfig(name=name)) for name in BASELINES}
    decoders = {
        OURS: lambda data: decompress_image(data, bundle),
        PLAIN: lambda data: decompress_image(data, bundle, fast=False),
        **{name: codec.decode for name, codec in codecs.items()},
    }
    seconds: dict[str, list[tuple[float, float]]] = {name: [] for name in decoders}
    for image in images:
        for name, decode in decoders.items():
            data = image["files"][name]
            seconds[name].append(timed(lambda d=data, f=decode: f(d), repeat))
    return seconds


def check_agreement(images: list[dict], bundle) -> int:
    """The largest difference (8-bit levels) between the fast and the plain path over all images."""
    worst = 0
    for image in images:
        data = image["files"][OURS]
        fast = decompress_image(data, bundle).astype(np.int16)
        plain = decompress_image(data, bundle, fast=False).astype(np.int16)
        worst = max(worst, int(np.abs(fast - plain).max()))
    return worst


def report(images: list[dict], seconds: dict[str, list[tuple[float, float]]]) -> tuple[str, dict]:
    megapixels = sum(image["mp"] for image in images)
    rows, summary = [], {}
    for name, times in seconds.items():
        medians, fastest = [t[0] for t in times], [t[1] for t in times]
        total_bytes = sum(len(image["files"][name]) for image in images)
        summary[name] = {
            "bpp": 8 * total_bytes / (megapixels * 1e6),
            "ms_per_mp": 1000 * sum(medians) / megapixels,
            "ms_per_mp_fastest": 1000 * sum(fastest) / megapixels,
            "ms_per_image_median": 1000 * statistics.median(medians),
        }
    ours = summary[OURS]["ms_per_mp"]
    rows.append(f"{'decoder':<22}{'bpp':>7}{'ms/MP':>10}{'(fastest)':>11}{'ms/image':>10}{'it / ours':>11}")
    for name, s in summary.items():
        rows.append(
            f"{name:<22}{s['bpp']:7.3f}{s['ms_per_mp']:10.2f}{s['ms_per_mp_fastest']:11.2f}"
            f"{s['ms_per_image_median']:10.2f}{s['ms_per_mp'] / ours:10.3f}x"
        )
    return "\n".join(rows), summary


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        model, path, fast, threads = sys.argv[2:6]
        child(model, path, fast == "1", int(threads))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="what open_bundle opens (default: random weights)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="image folder (default: Kodak)")
    parser.add_argument("--limit", type=int, help="the first N images only")
    parser.add_argument("--repeat", type=int, default=5, help="timed decodes per image and codec")
    parser.add_argument("--quality", type=int, help="our JPEG quality (default: the bundle's)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--json", help="write the figures to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="decode-speed-") as tmp:
        model = args.model or str(preset_bundle(Path(tmp)))
        bundle = open_bundle(model)
        paths = image_paths(args.data)[: args.limit]
        images = encode_all(paths, bundle, args.quality)
        worst = check_agreement(images, bundle)
        seconds = measure(images, bundle, args.repeat)
        sample = Path(tmp) / "cold.shrink.jpg"
        sample.write_bytes(images[0]["files"][OURS])
        colds = {name: cold(model, sample, name == OURS, args.threads) for name in (OURS, PLAIN)}
    table, summary = report(images, seconds)
    size = f"{len(images)} images, {sum(i['mp'] for i in images):.2f} MP"
    print(
        f"decode speed: {size} from {args.data}; model {args.model or 'random-weight cpu preset'} "
        f"(fused convolutions: {fused_convolutions(bundle.model.reccnn)}); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; median of {args.repeat} warm decodes per image\n"
    )
    print(table)
    print(f"\nours vs plain forward: largest pixel difference {worst} level(s) (allowed: 1)")
    print(f"cold, a fresh process on {images[0]['name']} (open_bundle / first decode / second decode, ms):")
    for name, c in colds.items():
        print(f"  {name:<22}{1000 * c['open']:8.1f}{1000 * c['first']:8.1f}{1000 * c['second']:8.1f}")
    if args.json:
        result = {
            "model": args.model or "random-weight cpu preset",
            "data": args.data,
            "images": [{"name": i["name"], "mp": i["mp"]} for i in images],
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "repeat": args.repeat,
            "summary": summary,
            "seconds": seconds,
            "cold": colds,
            "max_level_difference": worst,
        }
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
