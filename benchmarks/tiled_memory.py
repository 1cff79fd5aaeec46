"""Peak memory of ``shrink compress`` + ``shrink decompress`` on a large image: tiled vs whole image.

A synthetic photo-like image (default 4000x3000) is compressed and decompressed through the CLI, once with
tiles (``--tile``, default 512) and once whole (``--tile 0``). Each step of each mode runs in its own
subprocess, so one peak never hides another: peak RSS is the child's VmHWM (and, on CUDA,
``torch.cuda.max_memory_allocated``); "over imports" subtracts the child's RSS once torch and shrink are
imported. Without ``--bundle``, an untrained model built from ``studies/presets/demo.toml``'s config is saved
as a bundle in a temp dir (it costs what a trained model of that size costs). The outputs of the two modes are
compared at the end (JPEG bytes, largest pixel difference of the PNGs).

    .venv/bin/python benchmarks/tiled_memory.py [--bundle DIR] [--size 4000x3000] [--tile 512]
        [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def rss_mib() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across
    fork + exec, so a child's ru_maxrss is never below the parent's RSS at the fork."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(args: argparse.Namespace) -> None:
    """One CLI step in this process; prints a JSON line with its time and peaks."""
    import torch

    from shrink.search.cli import main

    imported = rss_mib()
    start = time.perf_counter()
    code = main(args.child)
    seconds = time.perf_counter() - start
    cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    print(
        json.dumps({"code": code, "seconds": seconds, "imported": imported, "peak": rss_mib(), "cuda": cuda})
    )


def synthetic_image(path: Path, width: int, height: int) -> None:
    """Smooth random colour fields plus mild noise (photo-like rates), written as a fast PNG."""
    from PIL import Image

    rng = np.random.default_rng(0)
    coarse = rng.uniform(0, 255, size=(height // 64 + 2, width // 64 + 2, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16)
    noise = rng.integers(-6, 7, size=smooth.shape, dtype=np.int16)
    Image.fromarray(np.clip(smooth + noise, 0, 255).astype(np.uint8)).save(path, compress_level=1)


def demo_bundle(folder: Path) -> Path:
    from shrink.compression.bundle import save_bundle
    from shrink.compression.config import load_config
    from shrink.compression.models import build_model

    config = load_config(REPO / "studies" / "presets" / "demo.toml")
    return save_bundle(folder / "demo-bundle", build_model(config.model), config, {"untrained": True})


def run_step(argv: list[str]) -> dict:
    command = [sys.executable, __file__, "--child", *argv]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode or not lines or json.loads(lines[-1])["code"]:
        raise SystemExit(f"step failed: {' '.join(argv)}\n{result.stdout}\n{result.stderr}")
    return {**json.loads(lines[-1]), "report": lines[0]}


def run_mode(tile: int, image: Path, bundle: Path, folder: Path, device: str) -> dict[str, dict]:
    jpg, png = folder / f"tile{tile}.jpg", folder / f"tile{tile}.png"
    common = ["--model", str(bundle), "--tile", str(tile), "--device", device, "--force"]
    return {
        "compress": run_step(["compress", str(image), "-o", str(jpg), *common]),
        "decompress": run_step(["decompress", str(jpg), "-o", str(png), *common]),
    }


def compare(folder: Path, tile: int) -> str:
    from PIL import Image

    tiled, whole = folder / f"tile{tile}", folder / "tile0"
    same_jpeg = (tiled.with_suffix(".jpg")).read_bytes() == (whole.with_suffix(".jpg")).read_bytes()
    a = np.asarray(Image.open(tiled.with_suffix(".png")), dtype=np.int16)
    b = np.asarray(Image.open(whole.with_suffix(".png")), dtype=np.int16)
    diff = np.abs(a - b)
    return (
        f"tiled vs whole: JPEG files {'identical' if same_jpeg else 'differ'}; decompressed PNGs: "
        f"max |diff| {int(diff.max())} levels, {float((diff > 0).mean()) * 100:.4f} % of values differ"
    )


def table(results: dict[str, dict[str, dict]]) -> str:
    rows = [
        f"{'mode':<10} {'step':<10} {'seconds':>8} {'peak RSS MiB':>13} {'over imports':>13} {'CUDA MiB':>9}"
    ]
    for mode, steps in results.items():
        for step, r in steps.items():
            cuda = "-" if r["cuda"] is None else f"{r['cuda']:.0f}"
            rows.append(
                f"{mode:<10} {step:<10} {r['seconds']:8.1f} {r['peak']:13.0f} "
                f"{r['peak'] - r['imported']:13.0f} {cuda:>9}"
            )
    return "\n".join(rows)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(argparse.Namespace(child=sys.argv[2:]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="an export bundle (default: untrained demo-size model)")
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the synthetic image")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="tiled-memory-") as tmp:
        folder = Path(tmp)
        bundle = Path(args.bundle) if args.bundle else demo_bundle(folder)
        image = folder / "synthetic.png"
        synthetic_image(image, width, height)
        results = {f"tile {args.tile}": run_mode(args.tile, image, bundle, folder, args.device)}
        results["whole"] = run_mode(0, image, bundle, folder, args.device)
        print(f"image {width}x{height}, bundle {bundle.name}, device {args.device}")
        print(results["whole"]["compress"]["report"])
        print(table(results))
        print(compare(folder, args.tile))


if __name__ == "__main__":
    main()
