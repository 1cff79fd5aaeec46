from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shrink.compression.baselines import BASELINE_AVIF_SPEED, BASELINE_WEBP_METHOD, resolve_codec
from shrink.compression.codecs import (
    AvifCodec,
    BatchRoundTrip,
    JpegCodec,
    WebPCodec,
    build_codec,
    from_uint8,
    to_uint8,
)
from shrink.compression.config import CodecConfig
from shrink.compression.data import CropSampler, ImageLoadError, NamedImage, load_images, read_image

from .conftest import textured_image


@pytest.mark.parametrize(
    "codec",
    [JpegCodec(), JpegCodec("4:4:4", optimize=False), WebPCodec(), AvifCodec()],
    ids=["jpeg420", "jpeg444", "webp", "avif"],
)
def test_round_trip_reports_the_real_file_size(codec):
    image = textured_image(64, 80, 0)
    data = codec.encode(image, 50)
    decoded, size = codec.round_trip(image, 50)
    assert size == len(data)
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.format == codec.pillow_format
        assert opened.size == (80, 64)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - image).mean() < 12


def test_jpeg_bytes_grow_with_quality():
    image = textured_image(96, 96, 1)
    sizes = [len(JpegCodec().encode(image, q)) for q in (10, 50, 90)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_batch_round_trip_matches_one_by_one():
    codec = JpegCodec()
    batch = torch.stack([from_uint8(textured_image(48, 48, seed)) for seed in range(4)])
    qualities = [10, 30, 60, 90]
    with BatchRoundTrip(codec, threads=2) as round_trip:
        decoded, sizes = round_trip(batch, qualities)
    for index, quality in enumerate(qualities):
        single, size = codec.round_trip(to_uint8(batch[index]), quality)
        assert size == sizes[index]
        assert torch.equal(decoded[index], from_uint8(single))


def test_uint8_conversion_rounds_like_quantize():
    x = torch.tensor([0.0, 0.5 / 255, 1.49 / 255, 1.0, 1.2, -0.1]).view(1, 1, 6).expand(3, 1, 6)
    assert to_uint8(x)[0, :, 0].tolist() == [0, 0, 1, 255, 255, 0]


def save(path: Path, image: Image.Image, **options) -> Path:
    image.save(path, **options)
    return path


def test_read_image_handles_modes_and_orientation(tmp_path: Path):
    rgb = Image.fromarray(textured_image(20, 30, 2))
    gray = save(tmp_path / "gray.png", rgb.convert("L"))
    rgba = save(tmp_path / "rgba.png", rgb.convert("RGBA"))
    palette = save(tmp_path / "palette.png", rgb.convert("P"))
    sixteen = save(tmp_path / "sixteen.png", Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257))
    exif = rgb.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    rotated = save(tmp_path / "rotated.jpg", rgb, exif=exif)
    for path in (gray, rgba, palette, sixteen):
        pixels = read_image(path)
        assert pixels.shape == (3, 20, 30) and pixels.dtype == torch.uint8
    assert torch.equal(read_image(sixteen), read_image(gray))
    assert read_image(rotated).shape == (3, 30, 20)


def test_unreadable_file_is_named(tmp_path: Path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageLoadError, match="broken.png"):
        read_image(bad)
    folder = tmp_path / "folder"
    folder.mkdir()
    Image.fromarray(textured_image(16, 16, 0)).save(folder / "a.png")
    (folder / "empty.png").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty.png"):
        load_images(folder)


def test_missing_and_empty_folders(tmp_path: Path):
    with pytest.raises(ImageLoadError, match="not found"):
        load_images(tmp_path / "absent")
    with pytest.raises(ImageLoadError, match="no images"):
        load_images(tmp_path)


def test_sample_sets_are_embedded_and_disjoint():
    train = {image.name for image in load_images("samples:train")}
    dev = {image.name for image in load_images("samples:dev")}
    test = {image.name for image in load_images("samples:test")}
    assert train and dev and test and not (train & dev or train & test or dev & test)


def test_crop_sampler_pads_small_images_and_is_reproducible():
    small = NamedImage("small", torch.randint(0, 256, (3, 20, 40), dtype=torch.uint8))
    big = NamedImage("big", torch.randint(0, 256, (3, 80, 80), dtype=torch.uint8))
    with pytest.warns(UserWarning, match="small is 40x20"):
        sampler = CropSampler([small, big], crop=32, seed=1)
    state = sampler.state_dict()
    first = sampler.sample(4)
    assert first.shape == (4, 3, 32, 32) and 0 <= first.min() and first.max() <= 1
    sampler.load_state_dict(state)
    assert torch.equal(sampler.sample(4), first)


def test_codec_effort_settings_reach_the_encoder():
    assert build_codec(CodecConfig(name="webp", webp_method=2)).save_options(50)["method"] == 2
    assert build_codec(CodecConfig(name="avif", avif_speed=9)).save_options(50)["speed"] == 9
    assert resolve_codec("webp").save_options(50)["method"] == BASELINE_WEBP_METHOD
    assert resolve_codec("avif").save_options(50)["speed"] == BASELINE_AVIF_SPEED
    image = textured_image(96, 128, seed=5)
    sizes = {m: len(build_codec(CodecConfig(name="webp", webp_method=m)).encode(image, 40)) for m in (0, 6)}
    assert sizes[6] != sizes[0]  # the effort is not ignored by libwebp


def test_dev_images_are_centre_cropped_to_the_side_multiple(tmp_path: Path):
    from shrink.compression.config import DataConfig
    from shrink.compression.trainer import load_dev_images

    pixels = textured_image(321, 481, seed=4)
    Image.fromarray(pixels).save(tmp_path / "odd.png")
    whole = load_dev_images(DataConfig(dev=str(tmp_path)))[0].pixels
    assert tuple(whole.shape) == (3, 321, 481)  # the default keeps CBSD68's odd sides
    cut = load_dev_images(DataConfig(dev=str(tmp_path), dev_side_multiple=16))[0].pixels
    assert tuple(cut.shape) == (3, 320, 480)
    torch.testing.assert_close(cut, whole[:, :320, :480])  # (321 - 320) // 2 = 0: the top-left stays
    capped = load_dev_images(DataConfig(dev=str(tmp_path), dev_max_side=250, dev_side_multiple=16))[0].pixels
    assert tuple(capped.shape) == (3, 240, 240)
    torch.testing.assert_close(capped, whole[:, 40:280, 120:360])  # centred: (321-240)//2, (481-240)//2
