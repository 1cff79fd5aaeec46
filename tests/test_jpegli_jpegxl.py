"""jpegli (a training codec writing standard JPEGs) and JPEG XL (a reference curve): files, rates, errors."""

from __future__ import annotations

import io
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import torch
from PIL import Image

from shrink.compression.baselines import DEFAULT_QUALITIES, codec_curve, resolve_codec, run_baselines
from shrink.compression.codecs import (
    BatchRoundTrip,
    JpegliCodec,
    JpegXLCodec,
    build_codec,
    from_uint8,
    jpegxl_distance,
    to_uint8,
)
from shrink.compression.config import CodecConfig, ConfigError, config_from_dict
from shrink.compression.data import NamedImage
from shrink.compression.metrics import bpp
from shrink.compression.trainer import Trainer
from shrink.search.cli import main
from shrink.search.space import active_params, config_for
from shrink.search.spec import load_spec

from .conftest import REPO, textured_image, tiny_config_dict
from .helpers import compress_with_codec_bundle

HEIGHT, WIDTH = 176, 208  # a known size (36608 pixels), > 160 px for 5-scale MS-SSIM
JXL_SIGNATURE = b"\xff\x0a"  # a bare JPEG XL codestream


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return textured_image(HEIGHT, WIDTH, 5)


def sof_sampling(data: bytes) -> list[tuple[int, int]]:
    """(horizontal, vertical) sampling factors of each component in the JPEG's SOF0/1/2 segment."""
    pos = 2
    while pos < len(data):
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            body = data[pos + 4 : pos + 2 + length]
            return [(body[7 + 3 * i] >> 4, body[7 + 3 * i] & 15) for i in range(body[5])]
        pos += 2 + length
    raise AssertionError("no SOF segment")


# ---------------------------------------------------------------- jpegli


def test_jpegli_writes_a_standard_4_2_0_jpeg_that_pillow_decodes(image: np.ndarray) -> None:
    codec = build_codec(CodecConfig(name="jpegli"))
    assert isinstance(codec, JpegliCodec)
    data = codec.encode(image, 50)
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"  # SOI ... EOI
    assert sof_sampling(data) == [(2, 2), (1, 1), (1, 1)]  # luma 2x2, chroma 1x1: 4:2:0
    with Image.open(io.BytesIO(data)) as opened:
        assert (opened.format, opened.mode, opened.size) == ("JPEG", "RGB", (WIDTH, HEIGHT))
        pillow = np.asarray(opened.convert("RGB"))
    decoded, size = codec.round_trip(image, 50)
    assert size == len(data) and np.array_equal(decoded, pillow)  # decoded by Pillow, as any JPEG
    assert np.abs(decoded.astype(int) - image).mean() < 6


def test_jpegli_bytes_decrease_with_quality(image: np.ndarray) -> None:
    sizes = [len(JpegliCodec().encode(image, q)) for q in (95, 75, 50, 25, 5)]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)


def test_jpegli_takes_a_strided_batch_like_training_does() -> None:
    batch = torch.stack([from_uint8(textured_image(48, 64, seed)) for seed in range(3)])
    qualities = [20, 50, 90]
    with BatchRoundTrip(JpegliCodec(), threads=2) as round_trip:  # to_uint8 gives non-contiguous arrays
        decoded, sizes = round_trip(batch, qualities)
    for index, quality in enumerate(qualities):
        single, size = JpegliCodec().round_trip(to_uint8(batch[index]), quality)
        assert size == sizes[index] and torch.equal(decoded[index], from_uint8(single))


def test_training_runs_through_jpegli(image_folder: Path, tmp_path: Path) -> None:
    overrides = ["codec.name=jpegli", "data.dev_max_images=1", "training.steps_per_epoch=2"]
    config = config_from_dict(tiny_config_dict(image_folder, epochs=2), overrides)
    trainer = Trainer(config, tmp_path / "run")
    assert isinstance(trainer.codec, JpegliCodec)
    result = trainer.run()
    assert [record.turns for record in result.history] == [["rec"], ["com"]]
    assert result.history[-1].train_bpp > 0 and np.isfinite(result.history[-1].dev_gain_db)


def test_jpegli_refuses_a_subsampling_it_cannot_honour(tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="jpegli .* always writes 4:2:0"):
        config_from_dict(tiny_config_dict(tmp_path), ["codec.name=jpegli", "codec.subsampling=4:4:4"])
    config_from_dict(tiny_config_dict(tmp_path), ["codec.name=jpegli", "codec.subsampling=4:2:0"])
    preset = REPO / "studies" / "presets" / "demo.toml"
    overrides = ["--set", "codec.name=jpegli", "--set", "codec.subsampling=4:4:4"]
    assert main(["train", "--config", str(preset), *overrides, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "always writes 4:2:0" in err
    assert not (tmp_path / "run").exists()


def test_a_jpegli_bundle_compresses_into_a_shrink_jpeg(tmp_path: Path, image: np.ndarray) -> None:
    compress_with_codec_bundle(tmp_path, image, ["codec.name=jpegli"], JpegliCodec())


@pytest.mark.parametrize("name", ["jpeg", "jpegli"])
def test_paper_space_samples_subsampling_only_where_the_codec_honours_it(name: str) -> None:
    spec = load_spec(REPO / "studies" / "paper.toml")

    def lookup(param: str, dist):
        if param == "codec.name":
            return name
        return getattr(dist, "choices", [getattr(dist, "low", None)])[-1]  # 4:4:4 where sampled

    params = active_params(spec, lookup)
    assert ("codec.subsampling" in params) == (name == "jpeg")
    codec = config_for(spec, params).codec
    assert (codec.name, codec.subsampling) == (name, "4:4:4" if name == "jpeg" else "4:2:0")


# ---------------------------------------------------------------- JPEG XL


def test_jpegxl_distance_is_cjxl_quality() -> None:
    assert jpegxl_distance(90) == pytest.approx(1.0) and jpegxl_distance(30) == pytest.approx(6.4)
    assert jpegxl_distance(5) == pytest.approx(19.69, abs=0.01) and jpegxl_distance(95) == pytest.approx(0.55)
    grid = [jpegxl_distance(q) for q in DEFAULT_QUALITIES["jpegxl"]]
    assert grid == sorted(grid, reverse=True) and len(set(grid)) == len(grid)


def test_jpegxl_round_trip(image: np.ndarray) -> None:
    codec = resolve_codec("jpegxl")
    assert codec == JpegXLCodec(effort=7)
    data = codec.encode(image, 50)
    assert data.startswith(JXL_SIGNATURE)
    assert data == imagecodecs.jpegxl_encode(image, level=50, effort=7)  # imagecodecs' level: the same map
    decoded, size = codec.round_trip(image, 50)
    assert size == len(data) and decoded.shape == image.shape and decoded.dtype == np.uint8
    assert np.array_equal(decoded, imagecodecs.jpegxl_decode(data))
    close, _ = codec.round_trip(image, 90)  # distance 1; libjxl smooths the image's pixel noise (std 6) away
    error = {q: np.abs(d.astype(int) - image).mean() for q, d in ((50, decoded), (90, close))}
    assert error[90] < error[50] < 8
    sizes = [len(codec.encode(image, q)) for q in (95, 75, 50, 25, 5)]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)


def test_jpegxl_is_no_training_codec(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="codec.name"):
        config_from_dict(tiny_config_dict(tmp_path), ["codec.name=jpegxl"])


# ---------------------------------------------------------------- rates and registries


@pytest.mark.parametrize("name", ["jpegli", "jpegxl"])
def test_curve_bpp_is_eight_bytes_over_the_original_pixels(image: np.ndarray, name: str) -> None:
    codec = resolve_codec(name)
    pixels = torch.from_numpy(image.copy()).permute(2, 0, 1).contiguous()
    curve = codec_curve([NamedImage("known", pixels)], name, [30, 70], threads=1)
    for row in curve.per_image:
        nbytes = len(codec.encode(image, row["quality"]))
        assert row["bytes"] == nbytes
        assert row["bpp"] == pytest.approx(8 * nbytes / (WIDTH * HEIGHT)) == bpp(nbytes, HEIGHT, WIDTH)
    assert curve.points[0].bpp < curve.points[1].bpp and curve.points[0].msssim < curve.points[1].msssim


def test_run_baselines_adds_jpegli_and_jpegxl_curves(image: np.ndarray) -> None:
    pixels = torch.from_numpy(image.copy()).permute(2, 0, 1).contiguous()
    curves = run_baselines(
        [NamedImage("one", pixels)], qualities=[40], codecs=("jpegli", "jpegxl"), ratios=()
    )
    assert list(curves) == ["jpegli", "jpegxl"]
    assert [p.quality for p in curves["jpegxl"].points] == [40]


def test_unknown_codec_names_are_refused_in_one_line(tmp_path: Path, capsys) -> None:
    preset = REPO / "studies" / "presets" / "demo.toml"
    out = str(tmp_path / "r")
    assert main(["train", "--config", str(preset), "--set", "codec.name=nope", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "codec.name" in err and "'jpegli'" in err
    refusal = r"^codec.name = 'nope' is not a codec; choose one of jpeg, mozjpeg, jpegli"
    with pytest.raises(ConfigError, match=refusal):
        build_codec(CodecConfig.model_construct(name="nope"))
    assert main(["baselines", "--data", str(tmp_path), "--json", f"{out}.json", "--codecs", "nope"]) == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
