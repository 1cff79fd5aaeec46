"""Distil the encoder-side optimum into a feed-forward ComCNN; measure how much of the upper bound it keeps.

1. Targets: random crops of the training photos, each at a random quality of the bundle's training range; the
   compact image of each is optimised for ``--steps`` steps (:func:`shrink.compression.optimise.
   optimisation_path`, the RD slope of the crop's own plain files, as ``shrink compress --optimise`` does).
2. Training: the bundle's own ComCNN (same architecture, so the decoder is unchanged; its zero-initialised
   head starts at the bicubic downscale) regresses the optimised compact images (MSE on compact pixels); the
   RecCNN is frozen. A tenth of the crops is held out: the share of the target's correction explained there
   is printed.
3. Measurement: the distilled bundle and the original, both with the plain encoder (decode-side cost zero),
   on the evaluation images and qualities; BD-rate (MS-SSIM dB and PSNR) of the distilled vs the original,
   side by side in one run. With ``--bound FILE`` (the upper-bound benchmark's JSON on the same images and
   qualities) it also prints the share of the upper bound recovered.

    .venv/bin/python benchmarks/distil_comcnn.py --out runs/distilled-comcnn \
        --bound results/2026-12-06-encoder-optimisation-kodak-msssim.json
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from shrink.compression.api import compress_image, open_bundle
from shrink.compression.bdrate import safe_bd_rate
from shrink.compression.bundle import save_bundle
from shrink.compression.codecs import to_uint8
from shrink.compression.data import CropSampler, load_images
from shrink.compression.optimise import ImageEncoder, optimisation_path
from shrink.compression.rd import curve_from_rows, load_curves, save_curves

sys.path.insert(0, str(Path(__file__).parent))
from encoder_optimisation import row  # noqa: E402  (a sibling script, not a package)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="zoo:cpu")
    parser.add_argument("--train", default="../shared/data/train")
    parser.add_argument("--crops", type=int, default=256)
    parser.add_argument("--crop", type=int, default=192)
    parser.add_argument("--steps", type=int, default=30, help="optimisation steps per target")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--data", default="../shared/data/kodak")
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--qualities", type=int, nargs="+", default=[15, 35, 60, 85])
    parser.add_argument("--bound", type=Path, help="the upper-bound benchmark's JSON (same images)")
    parser.add_argument("--bound-curve", default="opt-msssim-100")
    parser.add_argument("--out", type=Path, required=True, help="the distilled bundle (a new folder)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def targets(bundle, args) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(crop pixels uint8 3xCxC, optimised compact image 1x3xcxc) pairs."""
    sampler = CropSampler(load_images(args.train), args.crop, args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    low, high = bundle.config.codec.quality_range
    pairs, began = [], time.perf_counter()
    for index in range(args.crops):
        pixels = sampler.sample_uint8(1)[0]
        quality = int(torch.randint(low, high + 1, (1,), generator=generator))
        encoder = ImageEncoder(bundle, pixels, "msssim", 0)
        slope = encoder.slope(encoder.writer(to_uint8(encoder.start[0])), quality)
        codec = bundle.jpeg_codec()
        path = optimisation_path(bundle.model, pixels, encoder.start, codec, quality, slope, args.steps)
        *_, last = path
        pairs.append((pixels, last.best.clone()))
        if (index + 1) % 32 == 0:
            print(f"  targets: {index + 1}/{args.crops} ({time.perf_counter() - began:.0f} s)", flush=True)
    return pairs


def explained(model, pairs) -> float:
    """Share of the targets' correction (target - bicubic) explained: 1 - MSE(prediction) / MSE(bicubic)."""
    with torch.no_grad():
        error = base = 0.0
        for pixels, target in pairs:
            out = model.compress(pixels.float()[None] / 255.0)
            error += float(F.mse_loss(out["compact"], target))
            base += float(F.mse_loss(out["base"], target))
    return 1.0 - error / base


def train(model, pairs, args) -> None:
    params = list(model.comcnn.parameters())
    optimizer = torch.optim.Adam(params, lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    model.reccnn.requires_grad_(False)
    model.comcnn.train()
    for iteration in range(args.iterations):
        picks = torch.randint(0, len(pairs), (args.batch,), generator=generator).tolist()
        x = torch.stack([pairs[i][0] for i in picks]).float() / 255.0
        target = torch.cat([pairs[i][1] for i in picks])
        loss = F.mse_loss(model.compress(x)["compact"], target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (iteration + 1) % 500 == 0:
            print(f"  training: iteration {iteration + 1}, MSE {loss.item():.3e}", flush=True)
    model.eval()


def plain_curve(name: str, bundle, images, qualities) -> object:
    rows = []
    for image in images:
        for quality in qualities:
            data = compress_image(image.pixels, bundle, quality=quality, tile=0)
            rows.append(row(image.name, quality, data, bundle, image.pixels, {}))
    return curve_from_rows(name, rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bundle = open_bundle(args.model)
    pairs = targets(bundle, args)
    held = max(1, len(pairs) // 10)
    model = copy.deepcopy(bundle.model)
    train(model, pairs[held:], args)
    print(
        f"held-out crops: the distilled ComCNN explains {100 * explained(model, pairs[:held]):.1f} % of the "
        "optimised correction (MSE vs the bicubic start)"
    )
    save_bundle(
        args.out, model, bundle.config, {"distilled_from": str(args.model), "command": " ".join(sys.argv)}
    )
    distilled = open_bundle(args.out)
    images = load_images(args.data)[:: args.every]
    curves = {
        "plain": plain_curve("plain", bundle, images, args.qualities),
        "distilled": plain_curve("distilled", distilled, images, args.qualities),
    }
    gains = {m: safe_bd_rate(curves["plain"], curves["distilled"], m)[0] for m in ("msssim_db", "psnr")}
    print(
        f"distilled ComCNN vs the plain one, BD-rate: {gains['msssim_db']:+.2f} % MS-SSIM dB, "
        f"{gains['psnr']:+.2f} % PSNR ({len(images)} images of {args.data}, qualities {args.qualities})"
    )
    if args.bound is not None:
        bound = load_curves(args.bound)
        upper = safe_bd_rate(bound["opt-msssim-0"], bound[args.bound_curve], "msssim_db")[0]
        print(
            f"upper bound ({args.bound_curve}): {upper:+.2f} %; the distilled ComCNN recovers "
            f"{100 * gains['msssim_db'] / upper:.0f} % of it"
        )
    if args.json is not None:
        save_curves(args.json, curves, {"command": " ".join(sys.argv)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
