"""The training input pipeline: batches drawn ahead by a thread and the next batch's codec round trip started
during the current RecCNN step give the same batches and the same trained weights as a serial loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shrink.compression.codecs import BatchRoundTrip, JpegCodec, batch_to_uint8, to_uint8
from shrink.compression.config import config_from_dict
from shrink.compression.data import CropSampler, load_images
from shrink.compression.pipeline import Batch, BatchStream
from shrink.compression.trainer import Trainer

from .conftest import tiny_config_dict


def quiet(_: str) -> None:
    pass


def pipelined_config(image_folder: Path, prefetch: int, overlap: bool, **training):
    data = tiny_config_dict(image_folder, **training)
    data["device"].update(prefetch_batches=prefetch, overlap_codec=overlap)
    return config_from_dict(data)


def round_trip_starts(trainer: Trainer) -> list[int]:
    """Records the step at which each training codec round trip is started."""
    starts: list[int] = []
    original = trainer._start_round_trip

    def start(x, qualities):
        starts.append(trainer.step)
        return original(x, qualities)

    trainer._start_round_trip = start
    return starts


@pytest.mark.parametrize("prefetch", [0, 3])
def test_stream_yields_the_batches_a_serial_loop_draws(image_folder: Path, tmp_path: Path, prefetch: int):
    trainer = Trainer(pipelined_config(image_folder, prefetch, True), tmp_path, log=quiet)
    config = trainer.config
    sampler = CropSampler(load_images(image_folder), config.training.crop, seed=config.seed)
    qualities = torch.Generator().manual_seed(config.seed + 1)
    low, high = config.codec.quality_range
    for _ in range(6):
        batch, x, job = trainer._take_batch()
        assert job is None
        assert torch.equal(x, sampler.sample(config.training.batch_size))
        expected = torch.randint(low, high + 1, (config.training.batch_size,), generator=qualities).tolist()
        assert batch.qualities == expected
        assert torch.equal(batch.rng_after["sampler"], sampler.generator.get_state())
    trainer._close_batches()


@pytest.mark.parametrize("comcnn_norm", ["none", "batch"])
def test_pipelined_training_equals_serial_training(image_folder: Path, tmp_path: Path, comcnn_norm: str):
    """Both turns, a guard, epochs: the drawn-ahead batches and early codec round trips change nothing."""
    runs = {}
    for name, prefetch, overlap in (("serial", 0, False), ("pipelined", 2, True)):
        config = pipelined_config(
            image_folder, prefetch, overlap, epochs=3, steps_per_epoch=4, alternation_period=2
        )
        config.model.comcnn.norm = comcnn_norm
        trainer = Trainer(config, tmp_path / name, log=quiet)
        started = round_trip_starts(trainer)
        result = trainer.run()
        runs[name] = (trainer, result, started)
    (serial, serial_result, serial_starts), (piped, piped_result, piped_starts) = runs.values()
    assert serial.step == piped.step == 12
    for name, tensor in serial.model.state_dict().items():
        assert torch.equal(tensor, piped.model.state_dict()[name]), name
    assert [r.dev_gain_db for r in serial_result.history] == [r.dev_gain_db for r in piped_result.history]
    assert [r.train_bpp for r in serial_result.history] == [r.train_bpp for r in piped_result.history]
    # the pipelined run started some round trips a step early (at the step before the one that used them)
    assert sorted(serial_starts) == serial_starts and piped_starts != serial_starts
    assert len(piped_starts) == len(serial_starts)
    assert piped.batches is None and piped.ahead is None  # run() closed the stream


def test_the_pipeline_is_off_on_the_cpu_unless_asked(image_folder: Path, tmp_path: Path):
    """On a CPU its threads would compete with torch's for the same cores (benchmarks/step_overhead.py)."""
    default = Trainer(config_from_dict(tiny_config_dict(image_folder)), tmp_path / "default", log=quiet)
    assert (default.prefetch_batches, default.overlap_codec) == (0, False)
    asked = Trainer(pipelined_config(image_folder, 3, True), tmp_path / "asked", log=quiet)
    assert (asked.prefetch_batches, asked.overlap_codec) == (3, True)


def test_a_failing_draw_is_raised_in_the_training_thread():
    def draw() -> Batch:
        raise OSError("disk gone")

    stream = BatchStream(draw, depth=2)
    with pytest.raises(OSError, match="disk gone"):
        stream.next()
    stream.close()


def test_closing_a_full_stream_does_not_hang():
    drawn = []

    def draw() -> Batch:
        drawn.append(len(drawn))
        return Batch(torch.zeros(1), [50], {})

    stream = BatchStream(draw, depth=2)
    assert stream.next() is not None
    stream.close()
    assert not stream._thread.is_alive()
    assert len(drawn) <= 4  # one taken, two queued, one waiting to be queued


def test_uint8_hand_off_equals_the_per_image_round_trip():
    torch.manual_seed(0)
    batch = torch.rand(3, 3, 32, 48) * 1.2 - 0.1  # values outside [0, 1] are clamped like the file's
    images = batch_to_uint8(batch)
    assert images.dtype == torch.uint8 and images.shape == (3, 32, 48, 3)
    for index in range(3):
        assert np.array_equal(images[index].numpy(), to_uint8(batch[index]))
    codec = JpegCodec()
    with BatchRoundTrip(codec, threads=2) as round_trip:
        decoded, sizes = round_trip.submit(images.numpy(), [20, 50, 90]).result()
    for index, quality in enumerate([20, 50, 90]):
        single, size = codec.round_trip(to_uint8(batch[index]), quality)
        assert np.array_equal(decoded[index], single) and sizes[index] == size
