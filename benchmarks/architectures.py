"""Model families side by side at one wall-clock budget: dev and Kodak BD-rate vs JPEG, decoder cost, speed.

Each arm is the preset plus its own ``--set`` overrides, with ``training.time_budget_s`` set to the same
budget for every arm (same seed, data and crops), trained one after another in this process: run it alone on
the machine (two torch processes on 2 cores slow each other several-fold). Per arm it prints:

- dev BD-rate (MS-SSIM dB, PCHIP on log-rate) of the best epoch's dev curve against the dev JPEG curve: the
  selection figure (what a search sees);
- Kodak BD-rate of ``best.ckpt`` against JPEG at the same qualities, full images: the test figure,
  reported and never selected on (``--test ''`` skips it);
- decoder MACs per output pixel and decoder parameters (:mod:`shrink.compression.cost`);
- training steps/s within the budget (the dev evaluations at epoch ends included).

    .venv/bin/python benchmarks/architectures.py --config studies/presets/cpu.toml --budget 600 \\
        --out runs/architectures [--arm NAME:key=value,key=value ...]

Without ``--arm`` the default arms cover the families of ``compression.models`` at small CPU sizes. Arms are
resumable one by one (``summary.json`` in ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shrink.compression.baselines import codec_curve
from shrink.compression.bdrate import bd_rate_curves
from shrink.compression.bundle import load_model
from shrink.compression.codecs import JpegCodec, build_codec
from shrink.compression.cost import model_cost
from shrink.compression.data import load_images
from shrink.compression.evaluate import evaluate
from shrink.compression.files import atomic_write_text

sys.path.insert(0, str(Path(__file__).parent))
from comcnn_arms import parse_arm, run_arm  # noqa: E402  (a sibling script, not a package)

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"
TEST_QUALITIES = (5, 10, 20, 30, 50, 70, 90, 95)
# The cpu preset's RecCNN is plain, depth 10 x width 32 (~76k parameters); the others are near it.
RESIDUAL = "model.reccnn.family=residual,model.reccnn.depth=10"  # 4 EDSR blocks
DEFAULT_ARMS = (
    "plain:",
    f"residual:{RESIDUAL}",
    f"residual-attention:{RESIDUAL},model.reccnn.attention=true",
    "unet:model.reccnn.family=unet,model.reccnn.levels=2,model.reccnn.width=13",
    f"residual-pixelshuffle:{RESIDUAL},model.reccnn.width=31,model.reccnn.upsample=pixelshuffle",
    "car:model.comcnn.family=car",
)


def test_bd_rate(checkpoint: Path, folder: Path, qualities) -> float:
    model, config = load_model(checkpoint)
    images = load_images(folder)
    curve = evaluate(model, images, qualities, build_codec(config.codec))
    return bd_rate_curves(codec_curve(images, JpegCodec(), qualities), curve, "msssim_db")


def run_family(args: argparse.Namespace, overrides: list[str], out: Path) -> dict:
    overrides = [*args.overrides, f"training.time_budget_s={args.budget}", *overrides]
    result = run_arm(args.config, overrides, out)
    model, _ = load_model(out / "best.ckpt")
    result.update(model_cost(model))
    result["steps_per_s"] = result["steps"] / result["seconds"]
    if args.test:
        result["test_bd_rate"] = test_bd_rate(out / "best.ckpt", Path(args.test), TEST_QUALITIES)
    return {"overrides": overrides, **result}


def print_table(summary: dict) -> None:
    print(
        f"\n{'arm':<24}{'dev BD %':>9}{'test BD %':>10}{'dec MACs/px':>12}{'dec params':>11}"
        f"{'steps':>7}{'steps/s':>8}{'best ep':>8}"
    )
    for name, row in summary.items():
        test = f"{row['test_bd_rate']:+.2f}" if "test_bd_rate" in row else "-"
        print(
            f"{name:<24}{row['dev_bd_rate']:>+9.2f}{test:>10}{row['decoder_macs_per_pixel']:>12.0f}"
            f"{row['decoder_params']:>11d}{row['steps']:>7d}{row['steps_per_s']:>8.2f}{row['best_epoch']:>8d}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="studies/presets/cpu.toml")
    parser.add_argument("--budget", type=float, default=600, help="training seconds per arm")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="for every arm")
    parser.add_argument("--arm", action="append", help="NAME:key=value,key=value (default: every family)")
    parser.add_argument("--test", default=str(KODAK) if KODAK.is_dir() else "", help="test set folder")
    parser.add_argument("--out", default="runs/architectures")
    args = parser.parse_args()

    out = Path(args.out)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    for name, overrides in map(parse_arm, args.arm or DEFAULT_ARMS):
        if name in summary:
            continue
        print(f"arm {name}: {' '.join(overrides) or '(preset)'}", flush=True)
        summary[name] = run_family(args, overrides, out / name)
        atomic_write_text(summary_path, json.dumps(summary, indent=1))
    print_table(summary)


if __name__ == "__main__":
    main()
