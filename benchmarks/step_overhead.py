"""Cost of the real codec in the training loop: step time with real JPEG / step time with an identity codec.

Same model, same batch, same preset; the two variants are timed alternately in one process so machine noise
hits both. Target (issue 3): <= 1.15 on CPU at the demo preset.

    .venv/bin/python benchmarks/step_overhead.py [--config studies/presets/demo.toml] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from shrink.compression.config import load_config
from shrink.compression.trainer import Trainer


class IdentityRoundTrip:
    """Stands in for the codec's batch round trip: the stored 8-bit values come back unchanged."""

    def __call__(self, batch: torch.Tensor, qualities) -> tuple[torch.Tensor, list[int]]:
        return batch.clone(), [0] * batch.shape[0]

    def close(self) -> None:
        pass


def timed(step, x: torch.Tensor) -> float:
    start = time.perf_counter()
    step(x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="studies/presets/demo.toml")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    config = load_config(args.config)
    trainer = Trainer(config, "runs/bench-step-overhead", log=lambda _: None)
    real_round_trip = trainer.channel.round_trip
    x = trainer.sampler.sample(config.training.batch_size).to(trainer.device)
    print(
        f"preset {args.config}: batch {tuple(x.shape)}, gradient mode {config.training.gradient_mode}, "
        f"{torch.get_num_threads()} threads"
    )
    for name, step in (("RecCNN step", trainer.rec_step), ("ComCNN step", trainer.com_step)):
        real, identity = [], []
        for _ in range(2):  # warm-up both paths
            step(x)
        for _ in range(args.repeats):
            trainer.channel.round_trip = real_round_trip
            real.append(timed(step, x))
            trainer.channel.round_trip = IdentityRoundTrip()
            identity.append(timed(step, x))
        trainer.channel.round_trip = real_round_trip
        ratio = statistics.median(r / i for r, i in zip(real, identity, strict=True))
        print(
            f"{name}: real JPEG {statistics.median(real) * 1e3:7.1f} ms, identity codec "
            f"{statistics.median(identity) * 1e3:7.1f} ms, ratio {ratio:.3f} (median of paired runs)"
        )
    trainer.channel.close()


if __name__ == "__main__":
    main()
