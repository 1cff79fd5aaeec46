"""Cost of the real codec in the training loop, and how much of it the input pipeline hides.

One trainer, one process; the arms run in alternating blocks of steps so machine noise hits all of them:
- serial: batches drawn in the step and round-tripped in it (``device.prefetch_batches = 0``,
  ``device.overlap_codec = false``: the loop before the pipeline; the CPU's default);
- pipelined: batches drawn ahead by a thread and the next batch's round trip started during the current
  RecCNN step (CUDA's default);
each with the real codec and with an identity codec whose round trip returns the stored 8-bit values
unchanged (no codec cost). Each arm's RecCNN-turn step time (``Trainer.train_step``: batch, compact image,
codec, RecCNN pass and update), the real codec's ratio to the identity codec in the same loop and to the
identity codec in the serial loop, and the share of the step the training thread waited for data (the batch
and the decoded compact images). A ComCNN step (straight-through: the codec in its forward pass, not
pipelined) is timed real vs identity.
Targets (issue 22): pipelined <= 1.15 x identity at the paper preset on a GPU.

``--codecs jpeg mozjpeg``: instead, the same RecCNN-turn step with each inner codec's real round trip, serial
and pipelined, in alternating blocks, and each codec's step time as a ratio to the first codec's (issue 37:
mozjpeg <= 1.3 x libjpeg).

    .venv/bin/python benchmarks/step_overhead.py [--config studies/presets/demo.toml] [--set KEY=VALUE ...]
        [--steps 8] [--repeats 6] [--codecs jpeg mozjpeg ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch

from shrink.compression.codecs import BatchRoundTrip, RoundTripJob, build_codec
from shrink.compression.config import CodecConfig, load_config
from shrink.compression.trainer import Trainer


class IdentityRoundTrip:
    """Stands in for the codec's batch round trip: the stored 8-bit values come back unchanged."""

    def submit(self, images: np.ndarray, qualities) -> RoundTripJob:
        return RoundTripJob([_finished((image, 0)) for image in images])

    def close(self) -> None:
        pass


def _finished(result) -> Future:
    future: Future = Future()
    future.set_result(result)
    return future


@dataclass
class Arm:
    name: str
    prefetch: int
    overlap: bool
    identity: bool


ARMS = (
    Arm("identity, serial", 0, False, True),
    Arm("identity, pipelined", 2, True, True),
    Arm("real, serial", 0, False, False),
    Arm("real, pipelined", 2, True, False),
)


def use_arm(trainer: Trainer, arm: Arm, real_round_trip) -> None:
    trainer._close_batches()
    trainer.prefetch_batches, trainer.overlap_codec = arm.prefetch, arm.overlap
    trainer.channel.round_trip = IdentityRoundTrip() if arm.identity else real_round_trip


def sync(trainer: Trainer) -> None:
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)


def time_block(trainer: Trainer, steps: int) -> tuple[float, float]:
    """(seconds per step, share of it waiting for data) over ``steps`` RecCNN-turn steps."""
    trainer.train_step()  # the stream starts and fills: not timed
    sync(trainer)
    waited, start = trainer.input_wait_s, time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    sync(trainer)
    seconds = time.perf_counter() - start
    return seconds / steps, (trainer.input_wait_s - waited) / seconds


def reccnn_steps(trainer: Trainer, steps: int, repeats: int) -> None:
    real_round_trip = trainer.channel.round_trip
    times: dict[str, list[float]] = {arm.name: [] for arm in ARMS}
    waits: dict[str, list[float]] = {arm.name: [] for arm in ARMS}
    for repeat in range(repeats + 1):  # the first round warms every arm up
        for arm in ARMS:
            use_arm(trainer, arm, real_round_trip)
            seconds, wait = time_block(trainer, steps)
            if repeat:
                times[arm.name].append(seconds)
                waits[arm.name].append(wait)
    use_arm(trainer, ARMS[-1], real_round_trip)
    trainer._close_batches()

    def ratio(name: str, identity: str) -> float:
        return statistics.median(t / i for t, i in zip(times[name], times[identity], strict=True))

    for arm in ARMS:
        anchors = dict.fromkeys([f"identity, {arm.name.split(', ')[1]}", "identity, serial"])
        ratios = "".join(f"{ratio(arm.name, anchor):.3f} x {anchor}, " for anchor in anchors)
        print(
            f"RecCNN turn, {arm.name:19s}: {statistics.median(times[arm.name]) * 1e3:8.1f} ms/step, "
            f"{ratios if not arm.identity else ''}waiting for data "
            f"{100 * statistics.median(waits[arm.name]):5.1f} % of the step"
        )


def codec_steps(trainer: Trainer, names: list[str], steps: int, repeats: int) -> None:
    """RecCNN-turn steps with each codec's real round trip (same trainer, batches and threads), serial and
    pipelined, in alternating blocks; each codec's time as a ratio to the first codec's."""
    threads = trainer.channel.round_trip.pool._max_workers
    trips = {name: BatchRoundTrip(build_codec(CodecConfig(name=name)), threads) for name in names}
    real_arms = [arm for arm in ARMS if not arm.identity]
    times: dict[tuple[str, str], list[float]] = {(a.name, n): [] for a in real_arms for n in names}
    for repeat in range(repeats + 1):  # the first round warms every arm up
        for arm in real_arms:
            for name, trip in trips.items():
                use_arm(trainer, arm, trip)
                seconds, _ = time_block(trainer, steps)
                if repeat:
                    times[arm.name, name].append(seconds)
    trainer._close_batches()
    for arm in real_arms:
        first = times[arm.name, names[0]]
        for name in names:
            ratio = statistics.median(t / f for t, f in zip(times[arm.name, name], first, strict=True))
            print(
                f"RecCNN turn, {arm.name:15s} {name:8s}: "
                f"{statistics.median(times[arm.name, name]) * 1e3:8.1f} ms/step, {ratio:.3f} x {names[0]}"
            )
    for trip in trips.values():
        trip.close()


def comcnn_step(trainer: Trainer, repeats: int) -> None:
    batch, x, _ = trainer._take_batch()
    real_round_trip = trainer.channel.round_trip
    real, identity = [], []
    for repeat in range(repeats + 2):
        for round_trip, times in ((real_round_trip, real), (IdentityRoundTrip(), identity)):
            trainer.channel.round_trip = round_trip
            sync(trainer)
            start = time.perf_counter()
            trainer.com_step(x, batch.qualities)
            sync(trainer)
            if repeat >= 2:
                times.append(time.perf_counter() - start)
    trainer.channel.round_trip = real_round_trip
    ratio = statistics.median(r / i for r, i in zip(real, identity, strict=True))
    mode = trainer.config.training.gradient_mode
    print(
        f"ComCNN step ({mode}): real {statistics.median(real) * 1e3:8.1f} ms, "
        f"identity {statistics.median(identity) * 1e3:8.1f} ms, {ratio:.3f} x identity"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="studies/presets/demo.toml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per block")
    parser.add_argument("--repeats", type=int, default=6, help="blocks per arm")
    parser.add_argument("--codecs", nargs="+", help="compare these inner codecs' steps (the first: anchor)")
    args = parser.parse_args()

    # every step a RecCNN turn, no epoch end in the way
    overrides = ["training.epochs=1", "training.steps_per_epoch=1000000", "training.rec_warmup_epochs=1"]
    config = load_config(args.config, [*args.overrides, *overrides])
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(config, out, log=lambda _: None)
        training = config.training
        print(
            f"{args.config} {' '.join(args.overrides)}: {trainer.device}, batch {training.batch_size} x "
            f"{training.crop} px, ratio {config.model.ratio}, RecCNN {config.model.reccnn.family} "
            f"{config.model.reccnn.depth}x{config.model.reccnn.width}, amp {trainer.use_amp}, "
            f"{torch.get_num_threads()} torch threads, "
            f"{trainer.channel.round_trip.pool._max_workers} codec threads"
        )
        if args.codecs:
            codec_steps(trainer, args.codecs, args.steps, args.repeats)
        else:
            reccnn_steps(trainer, args.steps, args.repeats)
            comcnn_step(trainer, args.repeats)
        trainer.channel.close()


if __name__ == "__main__":
    main()
