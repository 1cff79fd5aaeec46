"""The encoder's per-image choice: --msssim Q, the smallest file reaching Q; --effort N, N models tried."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from shrink.compression.api import as_pixels, compress_image, open_bundle
from shrink.compression.choose import candidates, choose, measured
from shrink.compression.container import read_header
from shrink.search.cli import main

from .conftest import textured_image
from .helpers import crossing_family

ZOO = "zoo:cpu"


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(textured_image(192, 256, 7)).save(path)
    return path


@pytest.fixture
def family(tmp_path: Path, image_folder: Path) -> Path:
    return crossing_family(tmp_path, image_folder)


def test_msssim_target_is_the_smallest_quality_whose_decoded_image_reaches_it(photo: Path):
    bundle = open_bundle(ZOO)
    with Image.open(photo) as image:
        original = as_pixels(image)
    choice = choose(original, ZOO, msssim=0.95)
    below = compress_image(original, bundle, quality=choice.quality - 1)
    assert choice.msssim >= 0.95 and choice.model == ZOO
    assert measured(original, bundle, choice.data, 0) == pytest.approx(choice.msssim)
    assert measured(original, bundle, below, 0) < 0.95  # one quality lower misses the target
    assert read_header(choice.data).quality == choice.quality
    assert 2 <= choice.decoded <= 9  # a binary search over 1..100, not a scan


def test_a_higher_target_costs_more_bytes(photo: Path):
    with Image.open(photo) as image:
        sizes = [len(choose(image, ZOO, msssim=target).data) for target in (0.90, 0.93, 0.96)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_effort_two_tries_both_members_and_keeps_the_better_for_this_image(family: Path, photo: Path):
    with Image.open(photo) as image:
        by_average = choose(image, family, bpp=1.0, effort=1)
        per_image = choose(image, family, bpp=1.0, effort=2)
        today = compress_image(image, family, bpp=1.0)
    assert by_average.data == today  # effort 1 is the choice by the family's mean curves
    assert [name for name, _ in candidates(family, 1.0, None, 2)] == ["low", "high"]
    assert per_image.decoded == 2 and per_image.msssim >= by_average.msssim
    assert 8 * len(per_image.data) / (192 * 256) <= 1.0


def test_shrink_compress_msssim_prints_the_choice_and_decompresses(photo: Path, tmp_path: Path, capsys):
    out, back = tmp_path / "x.jpg", tmp_path / "y.png"
    assert main(["compress", str(photo), "--model", ZOO, "--msssim", "0.96", "-o", str(out)]) == 0
    said = capsys.readouterr().err
    assert "chose zoo:cpu at quality" in said and "candidate files decoded" in said
    assert main(["decompress", str(out), "-o", str(back), "--reference", str(photo)]) == 0
    reported = float(capsys.readouterr().out.split("MS-SSIM ")[1].split()[0])
    assert reported >= 0.96


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--effort", "2"], "--effort chooses per image for a target: give --bpp or --msssim"),
        (["--msssim", "1.5"], "a target MS-SSIM lies in (0, 1), got 1.5"),
        (["--msssim", "0.9", "--bpp", "0.5"], "not allowed with argument"),
        (["--msssim", "0.999999"], "MS-SSIM 0.999999 cannot be met by any of the 1 model(s) tried"),
    ],
)
def test_bad_targets_are_one_line_and_write_nothing(photo: Path, tmp_path: Path, capsys, extra, message):
    out = tmp_path / "x.jpg"
    assert main(["compress", str(photo), "--model", ZOO, *extra, "-o", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert message in error[-1] and not out.exists()


def test_an_image_too_small_for_ms_ssim_is_refused(tmp_path: Path, capsys):
    small = tmp_path / "small.png"
    Image.fromarray(textured_image(120, 200, 1)).save(small)
    args = ["compress", str(small), "--model", ZOO, "--msssim", "0.9", "-o", str(tmp_path / "s.jpg")]
    assert main(args) == 2
    assert "choosing by MS-SSIM needs both sides over 160 px" in capsys.readouterr().err
