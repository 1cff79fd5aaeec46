"""Encoder-side optimisation of the compact image (shrink compress --optimise): the decoder is unchanged, the
file kept never measures worse than the plain one, bad arguments are one line with nothing written."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from shrink.compression.api import compress_image, decompress_image, open_bundle, reconstruction_quality
from shrink.compression.container import read_header
from shrink.compression.optimise import (
    MAX_STEPS,
    compress_optimised,
    measured_db,
    optimisation_path,
    rd_objective,
    start_compact,
)
from shrink.search.cli import main

STEPS = 8


@pytest.fixture(scope="module")
def zoo_cpu():
    return open_bundle("zoo:cpu")


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    """A 192x208 crop of the astronaut: over 160 px a side (5-scale MS-SSIM), small enough to be quick."""
    crop = skimage.data.astronaut()[40:232, 150:358]
    return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).contiguous()


def db_of(data: bytes, bundle, pixels: torch.Tensor, distortion: str) -> float:
    return measured_db(*reconstruction_quality(decompress_image(data, bundle), pixels), distortion)


@pytest.mark.parametrize("distortion", ["msssim", "mse"])
def test_at_a_quality_the_file_kept_is_never_worse_and_decodes_unchanged(zoo_cpu, pixels, distortion):
    result = compress_optimised(pixels, zoo_cpu, steps=STEPS, quality=30, distortion=distortion)
    plain = compress_image(pixels, zoo_cpu, quality=30)
    header = read_header(result.data)
    assert (header.quality, header.bundle, header.width, header.height) == (30, zoo_cpu.sha256, 208, 192)
    kept = rd_objective(len(result.data), db_of(result.data, zoo_cpu, pixels, distortion), result.slope)
    before = rd_objective(len(plain), db_of(plain, zoo_cpu, pixels, distortion), result.slope)
    assert kept <= before
    assert result.plain_bytes == len(plain)
    assert result.optimised and result.data != plain  # on this crop the steps pay, for either loss
    assert math.isclose(result.kept_db, db_of(result.data, zoo_cpu, pixels, distortion), abs_tol=1e-9)


def test_a_bpp_target_is_met_and_the_quality_kept_is_never_lower(zoo_cpu, pixels):
    target = 0.5
    result = compress_optimised(pixels, zoo_cpu, steps=STEPS, bpp=target)
    plain = compress_image(pixels, zoo_cpu, bpp=target)
    assert len(result.data) * 8 <= target * 208 * 192
    assert result.kept_db >= db_of(plain, zoo_cpu, pixels, "msssim")


def test_an_msssim_target_is_reached_by_a_file_no_larger(zoo_cpu, pixels):
    target = 0.95
    result = compress_optimised(pixels, zoo_cpu, steps=STEPS, msssim=target)
    _, value = reconstruction_quality(decompress_image(result.data, zoo_cpu), pixels)
    assert value >= target
    assert len(result.data) <= result.plain_bytes


def test_zero_steps_is_the_plain_encoder_and_runs_repeat_exactly(zoo_cpu, pixels):
    assert compress_optimised(pixels, zoo_cpu, steps=0, quality=40).data == compress_image(
        pixels, zoo_cpu, quality=40
    )
    first = compress_optimised(pixels, zoo_cpu, steps=STEPS, quality=40).data
    assert compress_optimised(pixels, zoo_cpu, steps=STEPS, quality=40).data == first


@pytest.mark.parametrize("tile", [0, 128], ids=["whole", "tiled"])
def test_the_steps_lower_the_proxy_loss_whole_or_tiled(zoo_cpu, pixels, tile):
    start = start_compact(zoo_cpu.model, pixels, 0)
    flags = [p.requires_grad for p in zoo_cpu.model.parameters()]
    path = list(
        optimisation_path(zoo_cpu.model, pixels, start, zoo_cpu.jpeg_codec(), 30, 5.0, STEPS, tile=tile)
    )
    assert [step.step for step in path] == list(range(STEPS + 1))
    assert min(step.loss for step in path[1:]) < path[0].loss  # the best iterate is not the start
    best = path[-1].best
    assert best.shape == start.shape and not torch.equal(best, start)
    assert float(best.min()) >= 0.0 and float(best.max()) <= 1.0
    assert [p.requires_grad for p in zoo_cpu.model.parameters()] == flags  # the model is left as it was


def test_the_cli_says_what_it_kept_and_its_file_decompresses(zoo_cpu, pixels, tmp_path: Path, capsys):
    source, out, back = tmp_path / "in.png", tmp_path / "out.jpg", tmp_path / "back.png"
    Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(source)
    assert (
        main(
            [
                "compress",
                str(source),
                "--model",
                "zoo:cpu",
                "--optimise",
                "4",
                "-o",
                str(out),
                "--quality",
                "35",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "optimising, step 4/4" in err and "kept the" in err
    assert main(["decompress", str(out), "--model", "zoo:cpu", "-o", str(back)]) == 0
    assert np.asarray(Image.open(back)).shape == (192, 208, 3)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--optimise", "-1"], "--optimise: must be an integer in 0..10000"),
        (["--optimise", str(MAX_STEPS + 1)], "--optimise: must be an integer in 0..10000"),
        (["--optimise", "3", "--bpp", "1", "--effort", "2"], "--effort or --optimise, not both"),
        (["--optimise", "3", "--msssim", "1.5"], "a target MS-SSIM lies in (0, 1)"),
        (["--optimise", "3", "--optimise-loss", "ssim"], "invalid choice: 'ssim'"),
        (["--optimise", "3", "--bpp", "0.001"], "cannot be met"),
    ],
    ids=["negative", "too-many", "with-effort", "bad-msssim", "bad-loss", "unmeetable-bpp"],
)
def test_bad_steps_and_targets_are_one_line_and_write_nothing(pixels, tmp_path: Path, capsys, extra, message):
    source, out = tmp_path / "in.png", tmp_path / "out.jpg"
    Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(source)
    assert main(["compress", str(source), "--model", "zoo:cpu", "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == [source]


def test_the_library_refuses_bad_steps_and_distortions(zoo_cpu, pixels):
    with pytest.raises(ValueError, match="optimisation steps lie in 0..10000"):
        compress_optimised(pixels, zoo_cpu, steps=-2)
    with pytest.raises(ValueError, match="unknown distortion 'l1'"):
        compress_optimised(pixels, zoo_cpu, steps=1, distortion="l1")
    with pytest.raises(ValueError, match="both sides over 160 px"):
        compress_optimised(pixels[:, :100, :100], zoo_cpu, steps=1)
