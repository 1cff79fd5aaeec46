from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from shrink.compression.api import compact_bytes
from shrink.compression.baselines import downscale_curve
from shrink.compression.bundle import save_bundle
from shrink.compression.codecs import JpegCodec, WebPCodec
from shrink.compression.config import ModelConfig, config_from_dict
from shrink.compression.data import load_images
from shrink.compression.evaluate import evaluate, reconstruct_bytes
from shrink.compression.models import build_model
from shrink.compression.rd import load_curves
from shrink.search.cli import main

from .conftest import tiny_config_dict


@pytest.mark.parametrize("ratio", [1, 2, 3])
@pytest.mark.parametrize("codec", [JpegCodec(), WebPCodec()], ids=["jpeg", "webp"])
def test_untrained_model_reproduces_the_downscale_baseline_exactly(image_folder: Path, ratio: int, codec):
    images = load_images(image_folder)  # sizes that are not all multiples of 3: padding is exercised
    model = build_model(ModelConfig(ratio=ratio, comcnn={"width": 8}, reccnn={"depth": 3, "width": 8}))
    ours = evaluate(model, images, [20, 60], codec)
    baseline = downscale_curve(images, ratio, codec, [20, 60])
    assert ours.per_image == baseline.per_image
    assert ours.points == baseline.points


def test_evaluation_times_the_encode_and_decode_of_each_point(image_folder: Path):
    images = load_images(image_folder)
    model = build_model(ModelConfig(ratio=2, comcnn={"width": 8}, reccnn={"depth": 3, "width": 8}))
    curve = evaluate(model, images, [20, 60, 90], JpegCodec())
    assert curve.times is not None and len(curve.times) == len(curve.points) == 3
    assert all(0 < seconds < math.inf for pair in curve.times for seconds in pair)
    assert all(set(row) == {"image", "quality", "bytes", "bpp", "msssim", "psnr"} for row in curve.per_image)


def test_trained_weights_change_the_result(image_folder: Path):
    images = load_images(image_folder)[:1]
    model = build_model(ModelConfig(ratio=2, comcnn={"width": 8}, reccnn={"depth": 3, "width": 8}))
    before = evaluate(model, images, [50], JpegCodec()).per_image[0]
    torch.nn.init.normal_(model.reccnn.head.weight, std=0.05)
    after = evaluate(model, images, [50], JpegCodec()).per_image[0]
    assert after["bytes"] == before["bytes"]  # the RecCNN does not touch the file
    assert after["msssim"] != before["msssim"]


def test_compress_then_decompress_restores_the_original_size(image_folder: Path):
    image = load_images(image_folder)[0]
    model = build_model(ModelConfig(ratio=3, comcnn={"width": 8}, reccnn={"depth": 3, "width": 8})).eval()
    x = (image.pixels.float() / 255)[None]
    data = compact_bytes(model, image.pixels, JpegCodec(), 50, tile=0)
    restored = reconstruct_bytes(model, data, JpegCodec(), image.size)
    assert restored.shape == x.shape
    assert torch.equal(restored, torch.round(restored * 255) / 255)


def test_shrink_eval_writes_compressai_json_of_the_same_curve(image_folder: Path, tmp_path: Path, capsys):
    config = config_from_dict(tiny_config_dict(image_folder))
    bundle = save_bundle(tmp_path / "bundle", build_model(config.model), config, {"name": "b"})
    ours, theirs = tmp_path / "curve.json", tmp_path / "compressai" / "shrink-b.json"
    argv = ["eval", str(bundle), "--data", str(image_folder), "--qualities", "30", "70", "--name", "shrink-b"]
    assert main([*argv, "--json", str(ours), "--compressai-json", str(theirs)]) == 0
    assert f"wrote {theirs}" in capsys.readouterr().out
    [curve] = load_curves(ours).values()
    [read] = load_curves(theirs).values()
    assert read.name == curve.name == "shrink-b"
    values = [[(p.bpp, p.msssim, p.psnr) for p in c.points] for c in (read, curve)]
    assert values[0] == values[1]
    assert len(read.times) == 2 and all(0 < seconds < math.inf for pair in read.times for seconds in pair)
    assert "bundle_sha256" in json.loads(theirs.read_text())["description"]
    assert "encoding_time" not in ours.read_text()  # our own JSON is as it was
