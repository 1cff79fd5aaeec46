"""Training speed of each RecCNN family at a comparable parameter count, side by side, on this machine.

Each arm is a RecCNN config (``model.reccnn``); arms marked ``width=match`` get the width whose parameter
count is closest to the reference arm's (the first one). Per arm: ``--steps`` timed training steps (after
``--warmup``) of the RecCNN alone, on random ``--batch`` x 3 x ``--crop``² crops at ratio ``--ratio``: the
bicubic upscale of the compact image, the RecCNN, MSE, backward, an AdamW step (what a RecCNN turn does, minus
the codec). The arms take turns for ``--rounds`` rounds and each reports its fastest round (and the median),
so load from other processes that comes and goes hits every arm alike; still, run it alone on the machine.

    .venv/bin/python benchmarks/family_speed.py [--steps 20] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from shrink.compression.config import ModelConfig
from shrink.compression.models import build_model

ARMS = (
    ("plain", {"family": "plain", "depth": 10, "width": 32, "norm": "none"}),
    ("plain-batchnorm", {"family": "plain", "depth": 10, "width": 32, "norm": "batch"}),
    ("plain-shuffle", {"family": "plain", "depth": 10, "width": "match", "upsample": "pixelshuffle"}),
    ("residual", {"family": "residual", "depth": 10, "width": 32}),
    ("residual-attention", {"family": "residual", "depth": 10, "width": "match", "attention": True}),
    ("residual-k5", {"family": "residual", "depth": 6, "width": "match", "kernel": 5}),
    ("residual-shuffle", {"family": "residual", "depth": 10, "width": "match", "upsample": "pixelshuffle"}),
    ("unet-2", {"family": "unet", "levels": 2, "width": "match"}),
    ("unet-3", {"family": "unet", "levels": 3, "width": "match"}),
    ("unet-2-shuffle", {"family": "unet", "levels": 2, "width": "match", "upsample": "pixelshuffle"}),
)


def model_config(ratio: int, reccnn: dict) -> ModelConfig:
    return ModelConfig(ratio=ratio, comcnn={"depth": 2, "width": 4}, reccnn=reccnn)


def parameters(config: ModelConfig) -> int:
    return sum(p.numel() for p in build_model(config).reccnn.parameters())


def matched(ratio: int, reccnn: dict, target: int) -> dict:
    """``reccnn`` with the width (4..128) whose parameter count is closest to ``target``."""
    widths = range(4, 129)
    best = min(widths, key=lambda w: abs(parameters(model_config(ratio, {**reccnn, "width": w})) - target))
    return {**reccnn, "width": best}


class Arm:
    """One RecCNN in training, with its own optimiser and a fixed random batch."""

    def __init__(self, config: ModelConfig, crop: int, batch: int, seed: int):
        torch.manual_seed(seed)
        self.model = build_model(config).train()
        torch.nn.init.normal_(self.model.reccnn.head.weight, std=1e-3)  # off the zero start
        self.optimizer = torch.optim.AdamW(self.model.reccnn.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.rand(batch, 3, crop, crop, generator=generator)
        compact = crop // config.ratio
        self.decoded = torch.rand(batch, 3, compact, compact, generator=generator)

    def steps(self, count: int) -> float:
        """Seconds per step over ``count`` steps."""
        start = time.perf_counter()
        for _ in range(count):
            self.optimizer.zero_grad(set_to_none=True)
            x_hat = self.model.reconstruct(self.decoded, tuple(self.x.shape[-2:]), quality=50)["x_hat"]
            F.mse_loss(x_hat, self.x).backward()
            self.optimizer.step()
        return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--ratio", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    reference = parameters(model_config(args.ratio, ARMS[0][1]))
    print(
        f"RecCNN training steps, {args.batch}x3x{args.crop}x{args.crop} crops, ratio {args.ratio}, "
        f"{args.threads} threads, {args.rounds} rounds of {args.steps} steps after {args.warmup} warm-up; "
        f"widths matched to {reference} params; fastest round (median)\n"
    )
    configs, shown = {}, {}
    for name, reccnn in ARMS:
        if reccnn.get("width") == "match":
            reccnn = matched(args.ratio, reccnn, reference)
        configs[name] = model_config(args.ratio, reccnn)
        shown[name] = " ".join(f"{k}={v}" for k, v in reccnn.items() if k != "family")
    arms = {name: Arm(config, args.crop, args.batch, args.seed) for name, config in configs.items()}
    for arm in arms.values():
        arm.steps(args.warmup)
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.rounds):
        for name, arm in arms.items():
            times[name].append(arm.steps(args.steps))
    print(f"{'arm':<20}{'config':<52}{'params':>8}{'ms/step':>18}{'steps/s':>9}{'vs plain':>9}")
    base = min(times[ARMS[0][0]])
    for name, config in configs.items():
        best, median = min(times[name]), statistics.median(times[name])
        print(
            f"{name:<20}{shown[name]:<52}{parameters(config):>8}{1000 * best:>9.1f} ({1000 * median:>6.1f})"
            f"{1 / best:>9.2f}{base / best:>8.2f}x"
        )


if __name__ == "__main__":
    main()
