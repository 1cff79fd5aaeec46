"""The fast decode path (compression/inference.py) against the plain forward: within one 8-bit level."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shrink.compression import inference
from shrink.compression.api import compress_image, decompress_image, open_bundle
from shrink.compression.bundle import save_bundle
from shrink.compression.codecs import from_uint8, to_uint8
from shrink.compression.config import ModelConfig, TrainConfig, read_toml
from shrink.compression.models import build_model
from shrink.compression.tiling import Tiling, reconstruct_uint8, tilings

from .conftest import REPO, textured_image

KODAK_SIZE = (512, 768)  # a Kodak image, landscape


def preset_model_config() -> ModelConfig:
    """The CPU preset's model (the zoo model's architecture)."""
    return ModelConfig(**read_toml(REPO / "studies" / "presets" / "cpu.toml")["model"])


def random_model(config: ModelConfig, seed: int = 0) -> torch.nn.Module:
    """He init, every head and norm given random values (the zero start would make the residual 0)."""
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        model.reccnn.head.weight.normal_(std=0.02)
        model.reccnn.head.bias.normal_(std=0.01)
        for layer in model.reccnn.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.normal_(std=0.1)
                layer.running_mean.normal_(std=0.2)
                layer.running_var.uniform_(0.5, 2.0)
    return model.eval()


def decoded_compact(height: int, width: int, ratio: int, seed: int = 0) -> torch.Tensor:
    """A JPEG-like compact image, 1x3xhxw floats of 8-bit values."""
    image = textured_image(-(-height // ratio), -(-width // ratio), seed)
    return from_uint8(image)[None]


def plain_forward(model, decoded: torch.Tensor, size: tuple[int, int], quality: int) -> np.ndarray:
    """The reference: the whole image through ``model.reconstruct``, cropped and rounded to 8 bits."""
    ratio = model.ratio
    padded = (size[0] + (-size[0]) % ratio, size[1] + (-size[1]) % ratio)
    with torch.no_grad():
        x_hat = model.reconstruct(decoded, padded, quality)["x_hat"][0, :, : size[0], : size[1]]
    return to_uint8(x_hat)


def level_difference(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


@pytest.mark.parametrize("tile", [512, 0])
def test_the_fast_path_of_the_preset_model_is_within_one_level_on_a_kodak_sized_image(tile: int):
    model = random_model(preset_model_config())
    decoded = decoded_compact(*KODAK_SIZE, model.ratio)
    reference = plain_forward(model, decoded, KODAK_SIZE, quality=40)
    residual = reference.astype(np.int16) - plain_forward(model, decoded, KODAK_SIZE, quality=90)
    assert np.abs(residual).max() > 8  # the residual is not trivially zero and reads the quality
    fast = reconstruct_uint8(model, decoded, KODAK_SIZE, tilings(model, tile)[1], 40)
    assert level_difference(fast, reference) <= 1
    assert inference.fused_convolutions(model.reccnn) == torch.backends.mkldnn.is_available()


SHUFFLE_Q = {"upsample": "pixelshuffle", "quality_input": True}
FAMILIES = {
    "plain-batchnorm": {"family": "plain", "depth": 5, "width": 24, "norm": "batch"},
    "plain-shuffle-q": {"family": "plain", "depth": 4, "width": 16, "norm": "none", **SHUFFLE_Q},
    "residual-bicubic": {"family": "residual", "depth": 6, "width": 16, "res_scale": 0.5},
    "residual-k5-leaky": {"family": "residual", "depth": 4, "kernel": 5, "activation": "leaky_relu"},
    "residual-attention": {"family": "residual", "depth": 4, "width": 16, "attention": True},
    "unet": {"family": "unet", "levels": 2, "width": 8, **SHUFFLE_Q},
}
FUSED = {"plain-batchnorm", "plain-shuffle-q", "residual-bicubic"}


@pytest.mark.parametrize("ratio", [2, 3])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_decodes_within_one_level_of_its_plain_forward(name: str, ratio: int):
    config = ModelConfig(ratio=ratio, comcnn={"depth": 2, "width": 4}, reccnn=FAMILIES[name])
    model = random_model(config, seed=ratio)
    size = (181, 203)  # odd: padded to a multiple of the ratio, cropped back
    decoded = decoded_compact(*size, ratio, seed=1)
    quality = 30 if model.reccnn.cfg.quality_input else None
    reference = plain_forward(model, decoded, size, quality)
    for tiling in (tilings(model, 64)[1], Tiling()):
        fast = reconstruct_uint8(model, decoded, size, tiling, quality)
        assert level_difference(fast, reference) <= 1
    fused = torch.backends.mkldnn.is_available() and name in FUSED
    assert inference.fused_convolutions(model.reccnn) == fused


def test_the_fast_path_is_deterministic_and_follows_new_weights():
    model = random_model(preset_model_config())
    size = (240, 320)
    decoded = decoded_compact(*size, model.ratio)
    tiling = tilings(model, 512)[1]
    first = reconstruct_uint8(model, decoded, size, tiling, 50)
    assert np.array_equal(first, reconstruct_uint8(model, decoded, size, tiling, 50))
    with torch.no_grad():  # new weights in place: the cached plan must not decode with the old ones
        model.reccnn.head.weight.mul_(-1.0)
    after = reconstruct_uint8(model, decoded, size, tiling, 50)
    assert level_difference(after, first) > 8
    assert level_difference(after, plain_forward(model, decoded, size, 50)) <= 1
    model.reccnn.load_state_dict(random_model(preset_model_config(), seed=5).reccnn.state_dict())
    reloaded = reconstruct_uint8(model, decoded, size, tiling, 50)
    assert level_difference(reloaded, plain_forward(model, decoded, size, 50)) <= 1


def test_a_model_in_training_mode_or_off_float32_has_no_plan():
    model = random_model(preset_model_config())
    assert inference.decode_plan(model.reccnn) is not None
    assert inference.decode_plan(model.reccnn.train()) is None
    assert inference.decode_plan(model.reccnn.eval().double()) is None


def test_decompress_image_fast_and_plain_agree_on_a_bundle(tmp_path):
    config = TrainConfig(model=preset_model_config())
    bundle_dir = save_bundle(tmp_path / "bundle", random_model(config.model), config, {})
    bundle = open_bundle(bundle_dir)
    image = textured_image(*KODAK_SIZE, seed=3)
    data = compress_image(image, bundle, quality=35)
    fast = decompress_image(data, bundle)
    assert fast.shape == (*KODAK_SIZE, 3) and fast.dtype == np.uint8
    assert level_difference(fast, decompress_image(data, bundle, fast=False)) <= 1
