from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from shrink.compression.api import compact_bytes
from shrink.compression.baselines import downscale_curve
from shrink.compression.codecs import JpegCodec, WebPCodec
from shrink.compression.config import ModelConfig
from shrink.compression.data import load_images
from shrink.compression.evaluate import evaluate, reconstruct_bytes
from shrink.compression.models import build_model


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
