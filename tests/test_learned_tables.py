"""Explicit and learned quantisation tables (codec.base_tables, codec.learn_tables; issue 37)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shrink.compression import mozjpeg
from shrink.compression.bundle import bundle_from_checkpoint, load_bundle
from shrink.compression.checkpoint import model_from_checkpoint
from shrink.compression.codecs import JpegCodec, MozjpegCodec, build_codec
from shrink.compression.config import ConfigError, config_from_dict
from shrink.compression.jpeg_proxy import LearnedTables, quality_tables
from shrink.compression.qtables import EXTENDED_MAX, TABLE_SETS, scaled_tables
from shrink.compression.trainer import Trainer

from .conftest import tiny_config_dict
from .helpers import compress_with_codec_bundle


def quiet(_: str) -> None:
    pass


def flat_set(name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(tuple(v for row in table for v in row) for table in TABLE_SETS[name])  # type: ignore[return-value]


def file_tables(data: bytes) -> tuple[list[int], list[int]]:
    with Image.open(io.BytesIO(data)) as opened:
        tables = opened.quantization
    return list(tables[0]), list(tables[1])  # a tuple, as scaled_tables gives


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as opened:
        return np.asarray(opened.convert("RGB"))


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, (72, 88, 3), dtype=np.uint8)


@pytest.mark.parametrize("quality", [5, 40, 90])
def test_explicit_base_tables_write_what_the_named_set_writes(image: np.ndarray, quality: int) -> None:
    pair = flat_set("ahumada")
    assert JpegCodec(tables=pair).encode(image, quality) == JpegCodec(tables="ahumada").encode(image, quality)
    named, explicit = (mozjpeg.encode(image, quality, tables=t) for t in ("ahumada", pair))
    # the library numbers the components 0..2 when it is handed tables, 1..3 otherwise: the same scans
    assert len(explicit) == len(named) and file_tables(explicit) == file_tables(named)
    assert np.array_equal(decoded(explicit), decoded(named))


def test_explicit_tables_keep_16_bit_entries_in_mozjpeg(image: np.ndarray) -> None:
    pair = (tuple(range(600, 664)), tuple([7] * 64))
    data = MozjpegCodec(tables=pair).encode(image, 1)
    assert file_tables(data) == tuple(t.ravel().tolist() for t in scaled_tables(pair, 1, EXTENDED_MAX))
    assert min(file_tables(data)[0]) == 30_000 and max(file_tables(data)[0]) == EXTENDED_MAX  # clamped
    assert decoded(data).shape == image.shape


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["codec.base_tables=[[1,2],[3]]"], "two rows"),
        (
            ["codec.name=mozjpeg", "codec.tables=flat", f"codec.base_tables=[{[16] * 64},{[16] * 64}]"],
            "not both",
        ),
        ([f"codec.base_tables=[{[0] * 64},{[16] * 64}]"], "1..1000"),
        (["codec.name=webp", f"codec.base_tables=[{[16] * 64},{[16] * 64}]"], "only jpeg and mozjpeg"),
        (["codec.learn_tables=true"], "gradient_mode = 'proxy'"),
        (["codec.learn_tables=true", "training.gradient_mode=proxy", "loss.rate_weight=0"], "a rate term"),
        (
            ["codec.learn_tables=true", "training.gradient_mode=proxy", "training.rec_warmup_epochs=3"],
            "turns",
        ),
    ],
)
def test_table_configs_that_cannot_work_are_refused(image_folder: Path, overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(tiny_config_dict(image_folder), overrides)


def test_explicit_tables_reach_the_codec_and_the_proxy(image_folder: Path) -> None:
    pair = flat_set("watson")
    overrides = ["codec.name=mozjpeg", f"codec.base_tables={[list(row) for row in pair]}"]
    config = config_from_dict(tiny_config_dict(image_folder), overrides)
    assert build_codec(config.codec) == MozjpegCodec(tables=pair)
    qualities = torch.tensor([7, 50, 93])
    for got, expected in zip(
        quality_tables(qualities, pair), quality_tables(qualities, "watson"), strict=True
    ):
        assert torch.equal(got, expected)


@pytest.mark.parametrize("codec_name", ["jpeg", "mozjpeg"])
def test_shrink_compress_writes_a_bundles_explicit_tables(tmp_path: Path, codec_name: str) -> None:
    pair = (tuple(range(10, 74)), tuple(range(80, 144)))
    overrides = [f"codec.name={codec_name}", f"codec.base_tables={[list(row) for row in pair]}"]
    codec = build_codec(config_from_dict(tiny_config_dict(tmp_path), overrides).codec)
    image = np.random.default_rng(2).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    data = compress_with_codec_bundle(tmp_path, image, overrides, codec)
    assert file_tables(data) == tuple(
        t.ravel().tolist() for t in scaled_tables(pair, 40, codec.max_quantizer)
    )


def test_learned_tables_quantise_like_the_named_set_and_pass_a_gradient() -> None:
    tables = LearnedTables("psnr-hvs-m")
    assert tables.integer_base() == flat_set("psnr-hvs-m")
    qualities = torch.arange(1, 101)
    luma, chroma = quality_tables(qualities, tables.base(), EXTENDED_MAX)
    named = quality_tables(qualities, "psnr-hvs-m", EXTENDED_MAX)
    assert torch.equal(luma, named[0]) and torch.equal(chroma, named[1])
    luma.sum().backward()
    assert tables.log_base.grad[0].abs().min() > 0 and tables.log_base.grad[1].abs().max() == 0


def learning_config(image_folder: Path, **training):
    training.setdefault("guard", {"enabled": False})
    overrides = [
        "codec.name=mozjpeg",
        "codec.tables=ahumada",
        "codec.learn_tables=true",
        "training.gradient_mode=proxy",
        "loss.com_loss=gain",
        "optim_com.lr=0",
        "optim_tables.lr=0.05",
    ]
    return config_from_dict(tiny_config_dict(image_folder, **training), overrides)


def test_a_run_learns_its_tables_and_its_codec_writes_with_them(image_folder: Path, tmp_path: Path) -> None:
    trainer = Trainer(learning_config(image_folder), tmp_path, log=quiet)
    comcnn_before = {k: v.clone() for k, v in trainer.model.comcnn.state_dict().items()}
    result = trainer.run()
    learned = trainer.tables.integer_base()
    assert learned != flat_set("ahumada")  # the tables learned on the ComCNN's turns
    for name, tensor in trainer.model.comcnn.state_dict().items():  # optim_com.lr = 0: the ComCNN did not
        assert torch.equal(tensor, comcnn_before[name]), name
    assert trainer.codec.tables == learned
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert file_tables(trainer.codec.encode(pixels, 30)) == tuple(
        t.ravel().tolist() for t in scaled_tables(learned, 30, EXTENDED_MAX)
    )
    assert ["com"] in [record.turns for record in result.history]

    model, config = model_from_checkpoint(tmp_path / "last.ckpt")
    assert (
        config.codec.base_tables == learned and not config.codec.learn_tables and config.codec.tables is None
    )
    bundle_from_checkpoint(tmp_path / "last.ckpt", tmp_path / "bundle", {})
    assert load_bundle(tmp_path / "bundle")[1].codec.base_tables == learned


def test_a_run_that_learns_tables_resumes_exactly(image_folder: Path, tmp_path: Path) -> None:
    full = Trainer(learning_config(image_folder), tmp_path / "full", log=quiet)
    full.run()
    first = Trainer(learning_config(image_folder, time_budget_s=1e-9), tmp_path / "split", log=quiet)
    first.run()
    resumed = Trainer(learning_config(image_folder), tmp_path / "split", log=quiet)
    resumed.resume(tmp_path / "split" / "last.ckpt")
    resumed.run()
    assert torch.equal(full.tables.log_base, resumed.tables.log_base)
    assert resumed.codec.tables == full.codec.tables


def test_the_guard_rolls_back_tables_that_lose_on_dev(image_folder: Path, tmp_path: Path) -> None:
    """A ComCNN turn whose tables score worse on dev (real files) is undone, tables and codec with it."""

    def ruin_tables_after_the_com_turn(record, trainer: Trainer) -> None:
        if record.turns == ["com"]:  # fine quantisers for noise, the coarsest for the picture itself
            with torch.no_grad():
                trainer.tables.log_base.fill_(0.0)[:, 0, :3] = float(np.log(1000))
            trainer._sync_codec_tables()

    config = learning_config(image_folder, guard={"enabled": True})
    trainer = Trainer(config, tmp_path, log=quiet, callback=ruin_tables_after_the_com_turn)
    history = trainer.run().history
    assert [record.turns for record in history] == [["rec"], ["com"], ["rec"]]
    assert history[2].rolled_back
    assert trainer.tables.integer_base() == trainer.codec.tables == flat_set("ahumada")
