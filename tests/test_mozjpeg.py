"""mozjpeg as a training codec and a baseline, and the named quantisation table sets (issue 37)."""

from __future__ import annotations

import io
import os
import tempfile
import typing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shrink.compression import mozjpeg
from shrink.compression.baselines import resolve_codec, run_baselines
from shrink.compression.channel import CodecChannel
from shrink.compression.codecs import BatchRoundTrip, JpegCodec, MozjpegCodec, build_codec, from_uint8
from shrink.compression.config import CodecConfig, ConfigError, TableSetName, config_from_dict
from shrink.compression.data import NamedImage
from shrink.compression.jpeg_proxy import quality_tables
from shrink.compression.qtables import BASELINE_MAX, EXTENDED_MAX, TABLE_SETS, quality_scale, scaled_tables
from shrink.compression.rd import save_curves
from shrink.compression.trainer import Trainer
from shrink.search.cli import main

from .conftest import REPO, textured_image, tiny_config_dict
from .helpers import compress_with_codec_bundle
from .test_jpegli_jpegxl import sof_sampling

HEIGHT, WIDTH = 176, 208
SOF2 = b"\xff\xc2"  # progressive DCT frame
ALL_QUALITIES = range(1, 101)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return textured_image(HEIGHT, WIDTH, 7)


def file_tables(data: bytes) -> tuple[list[int], list[int]]:
    with Image.open(io.BytesIO(data)) as opened:
        tables = opened.quantization
    return list(tables[0]), list(tables[1])


def flat(tables: tuple[np.ndarray, np.ndarray]) -> tuple[list[int], list[int]]:
    return tables[0].ravel().tolist(), tables[1].ravel().tolist()


# ---------------------------------------------------------------- the table sets


def test_the_config_names_exactly_the_table_sets() -> None:
    assert list(typing.get_args(TableSetName)) == list(TABLE_SETS)
    assert (
        len(TABLE_SETS) == 9 and list(TABLE_SETS)[:1] == ["annex-k"] and list(TABLE_SETS)[3] == "imagemagick"
    )


def test_quality_scaling_is_libjpegs() -> None:
    assert [quality_scale(q) for q in (1, 10, 49, 50, 75, 100)] == [5000, 500, 102, 100, 50, 0]


@pytest.mark.parametrize("name", list(TABLE_SETS))
def test_every_set_at_every_quality_is_what_mozjpeg_and_pillow_write(name: str) -> None:
    small = textured_image(16, 16, 1)
    for quality in ALL_QUALITIES:
        moz = mozjpeg.encode(small, quality, tables=name)
        assert file_tables(moz) == flat(scaled_tables(name, quality, EXTENDED_MAX)), (name, quality)
        pillow = JpegCodec(tables=name).encode(small, quality)
        assert file_tables(pillow) == flat(scaled_tables(name, quality, BASELINE_MAX)), (name, quality)


def test_the_proxy_quantises_with_the_codecs_tables() -> None:
    qualities = torch.tensor([5, 30, 50, 90])
    for name in TABLE_SETS:
        for max_value in (BASELINE_MAX, EXTENDED_MAX):
            luma, chroma = quality_tables(qualities, name, max_value)
            for index, quality in enumerate(qualities.tolist()):
                expected = scaled_tables(name, quality, max_value)
                assert luma[index].long().tolist() == expected[0].tolist()
                assert chroma[index].long().tolist() == expected[1].tolist()
    channel = CodecChannel(MozjpegCodec(tables="watson"), "proxy", threads=1)
    assert (channel.proxy.tables, channel.proxy.max_quantizer) == ("watson", EXTENDED_MAX)
    channel.close()


def test_annex_k_through_pillow_is_unchanged_and_other_sets_change_the_file(image: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=40, subsampling="4:2:0", optimize=True)
    assert JpegCodec().encode(image, 40) == buffer.getvalue()  # today's files, byte for byte
    assert JpegCodec(tables="imagemagick").encode(image, 40) != buffer.getvalue()


# ---------------------------------------------------------------- the codec


def test_mozjpeg_writes_a_progressive_jpeg_that_pillow_decodes(image: np.ndarray) -> None:
    codec = build_codec(CodecConfig(name="mozjpeg"))
    assert codec == MozjpegCodec(subsampling="4:2:0", tables="imagemagick")
    data = codec.encode(image, 50)
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9" and SOF2 in data
    assert sof_sampling(data) == [(2, 2), (1, 1), (1, 1)]
    with Image.open(io.BytesIO(data)) as opened:
        assert (opened.format, opened.mode, opened.size) == ("JPEG", "RGB", (WIDTH, HEIGHT))
        assert opened.info.get("progressive") == 1
        pillow = np.asarray(opened.convert("RGB"))
    decoded, size = codec.round_trip(image, 50)
    assert size == len(data) and np.array_equal(decoded, pillow)
    assert np.abs(decoded.astype(int) - image).mean() < 6
    full = MozjpegCodec(subsampling="4:4:4").encode(image, 50)
    assert sof_sampling(full) == [(1, 1), (1, 1), (1, 1)]


def test_mozjpeg_spends_fewer_bytes_than_libjpeg_at_equal_tables(image: np.ndarray) -> None:
    """Trellis quantisation and progressive scans, with the very same tables as Pillow's file."""
    for quality in (30, 60, 90):
        libjpeg = JpegCodec(tables="annex-k").encode(image, quality)
        moz = MozjpegCodec(tables="annex-k").encode(image, quality)
        assert file_tables(moz) == file_tables(libjpeg)
        assert len(moz) < len(libjpeg)


def test_mozjpeg_bytes_decrease_with_quality(image: np.ndarray) -> None:
    sizes = [len(MozjpegCodec().encode(image, q)) for q in (95, 75, 50, 25, 5)]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)


def test_mozjpeg_is_thread_safe_and_leaves_nothing_behind() -> None:
    images = [textured_image(64 + 8 * seed, 96, seed) for seed in range(12)]
    qualities = [5 + 8 * seed for seed in range(12)]
    serial = [mozjpeg.encode(x, q) for x, q in zip(images, qualities, strict=True)]
    descriptors = sorted(os.listdir("/proc/self/fd"))
    temporary = sorted(os.listdir(tempfile.gettempdir()))
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            assert list(pool.map(mozjpeg.encode, images, qualities)) == serial
    assert sorted(os.listdir("/proc/self/fd")) == descriptors
    assert sorted(os.listdir(tempfile.gettempdir())) == temporary
    batch = torch.stack([from_uint8(textured_image(48, 64, seed)) for seed in range(3)])
    with BatchRoundTrip(MozjpegCodec(), threads=2) as round_trip:  # non-contiguous arrays, as training has
        decoded, sizes = round_trip(batch, [20, 50, 90])
    for index, quality in enumerate([20, 50, 90]):
        single, size = MozjpegCodec().round_trip(textured_image(48, 64, index), quality)
        assert size == sizes[index] and torch.equal(decoded[index], from_uint8(single))


@pytest.mark.parametrize(
    ("pixels", "quality", "message"),
    [
        (np.zeros((8, 8, 3), np.uint16), 50, "expected HxWx3 uint8"),
        (np.zeros((8, 8), np.uint8), 50, "expected HxWx3 uint8"),
        (np.zeros((1, 65501, 3), np.uint8), 50, "JPEG allows 1..65500 a side"),
        (np.zeros((0, 8, 3), np.uint8), 50, "JPEG allows 1..65500 a side"),
        (np.zeros((8, 8, 3), np.uint8), 0, "quality 0 is outside 1..100"),
    ],
)
def test_mozjpeg_refuses_what_libjpeg_would_end_the_process_on(pixels, quality, message) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        mozjpeg.encode(pixels, quality)
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="unknown table set 'nope'"):
        mozjpeg.encode(np.zeros((8, 8, 3), np.uint8), 50, tables="nope")


def test_table_sets_are_refused_for_codecs_that_choose_their_own(tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="only jpeg and mozjpeg take a table set"):
        config_from_dict(tiny_config_dict(tmp_path), ["codec.name=jpegli", "codec.tables=flat"])
    config = config_from_dict(tiny_config_dict(tmp_path), ["codec.name=jpeg", "codec.tables=psnr-hvs-m"])
    assert build_codec(config.codec) == JpegCodec(tables="psnr-hvs-m")
    out, preset = tmp_path / "run", REPO / "studies" / "presets" / "demo.toml"
    overrides = ["--set", "codec.name=jpegli", "--set", "codec.tables=flat"]
    assert main(["train", "--config", str(preset), *overrides, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "only jpeg and mozjpeg take a table set" in err and not out.exists()
    with pytest.raises(ConfigError, match="codec.tables"):
        config_from_dict(tiny_config_dict(tmp_path), ["codec.tables=nope"])


def test_training_runs_through_mozjpeg(image_folder: Path, tmp_path: Path) -> None:
    overrides = ["codec.name=mozjpeg", "codec.tables=msssim-kodak"]
    overrides += ["data.dev_max_images=1", "training.steps_per_epoch=2"]
    config = config_from_dict(tiny_config_dict(image_folder, epochs=2), overrides)
    trainer = Trainer(config, tmp_path / "run")
    assert trainer.codec == MozjpegCodec(tables="msssim-kodak")
    assert trainer.channel.proxy.tables == "msssim-kodak"
    result = trainer.run()
    assert [record.turns for record in result.history] == [["rec"], ["com"]]
    assert result.history[-1].train_bpp > 0 and np.isfinite(result.history[-1].dev_gain_db)


def test_a_mozjpeg_bundle_compresses_into_a_shrink_jpeg(tmp_path: Path, image: np.ndarray) -> None:
    overrides = ["codec.name=mozjpeg", "codec.tables=flat"]
    data = compress_with_codec_bundle(tmp_path, image, overrides, MozjpegCodec(tables="flat"))
    assert file_tables(data) == flat(scaled_tables("flat", 40, EXTENDED_MAX))


def test_mozjpeg_is_a_baseline_curve(image: np.ndarray) -> None:
    pixels = torch.from_numpy(image.copy()).permute(2, 0, 1).contiguous()
    curves = run_baselines(
        [NamedImage("one", pixels)], qualities=[30, 70], codecs=("jpeg", "mozjpeg"), ratios=()
    )
    assert list(curves) == ["jpeg", "mozjpeg"] and resolve_codec("mozjpeg") == MozjpegCodec()
    for row in curves["mozjpeg"].per_image:
        assert row["bytes"] == len(MozjpegCodec().encode(image, row["quality"]))
    assert all(m.bpp < j.bpp for m, j in zip(curves["mozjpeg"].points, curves["jpeg"].points, strict=True))


def test_bdrate_prints_a_mozjpeg_table_next_to_jpeg_by_default(image: np.ndarray, tmp_path: Path, capsys):
    pixels = torch.from_numpy(image.copy()).permute(2, 0, 1).contiguous()
    one = [NamedImage("one", pixels)]
    anchors = run_baselines(one, qualities=[20, 40, 60, 80], codecs=("jpeg", "mozjpeg", "webp"), ratios=())
    test = run_baselines(one, qualities=[20, 40, 60, 80], codecs=("jpegli",), ratios=())
    save_curves(tmp_path / "anchors.json", anchors)
    save_curves(tmp_path / "test.json", test)
    assert main(["bdrate", str(tmp_path / "anchors.json"), str(tmp_path / "test.json")]) == 0
    tables = [line.split(" (")[0] for line in capsys.readouterr().out.splitlines() if "BD-rate vs" in line]
    assert tables == ["BD-rate vs jpeg", "BD-rate vs mozjpeg"]
    save_curves(tmp_path / "jpeg-only.json", {"jpeg": anchors["jpeg"], "webp": anchors["webp"]})
    assert main(["bdrate", str(tmp_path / "jpeg-only.json"), str(tmp_path / "test.json")]) == 0
    assert "BD-rate vs mozjpeg" not in capsys.readouterr().out
