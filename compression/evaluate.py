"""Honest evaluation: full images, batch size 1, real files, 8-bit outputs.

Each image is padded to a multiple of the ratio, compressed by the ComCNN, stored as a real file by the codec
(its ``len()`` is the rate), decoded, upscaled, corrected by the RecCNN, cropped back and rounded to 8 bits as
a decompressed PNG would be. bpp is over the original W x H.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from .codecs import Codec, from_uint8, to_uint8
from .data import NamedImage
from .models import ShrinkModel
from .rd import RDCurve, curve_from_rows, measure
from .resample import pad_to_multiple, quantize_8bit


@torch.no_grad()
def compress_image(model: ShrinkModel, x: torch.Tensor, codec: Codec, quality: int) -> bytes:
    """1x3xHxW in [0, 1] -> the bytes of the real file holding the compact image."""
    compact = model.compress(pad_to_multiple(x, model.ratio))["compact"]
    return codec.encode(to_uint8(compact[0]), quality)


@torch.no_grad()
def decompress_image(
    model: ShrinkModel, data: bytes, codec: Codec, size: tuple[int, int], quality: int | None = None
) -> torch.Tensor:
    """File bytes -> 1x3xHxW reconstruction in [0, 1], rounded to 8 bits (``quality``: the file's, for a
    quality-conditioned RecCNN)."""
    device = next(model.parameters()).device
    decoded = from_uint8(codec.decode(data))[None].to(device)
    height, width = size
    padded = (height + (-height) % model.ratio, width + (-width) % model.ratio)
    x_hat = model.reconstruct(decoded, padded, quality)["x_hat"][..., :height, :width]
    return quantize_8bit(x_hat.float())


@torch.no_grad()
def evaluate_image(model: ShrinkModel, image: NamedImage, codec: Codec, quality: int) -> dict:
    device = next(model.parameters()).device
    x = (image.pixels.float() / 255.0)[None].to(device)
    data = compress_image(model, x, codec, quality)
    x_hat = decompress_image(model, data, codec, image.size, quality)
    return measure(image.name, quality, len(data), x_hat, x)


def evaluate(
    model: ShrinkModel,
    images: Sequence[NamedImage],
    qualities: Iterable[int],
    codec: Codec,
    name: str = "shrink",
    progress: bool = False,
) -> RDCurve:
    """Per-image and mean bpp, MS-SSIM, MS-SSIM dB and PSNR at each quality."""
    was_training = model.training
    model.eval()
    qualities = list(qualities)
    jobs = [(quality, image) for image in images for quality in qualities]
    if progress:
        from tqdm import tqdm

        jobs = tqdm(jobs, desc=f"eval {name}", unit="img")
    rows = [evaluate_image(model, image, codec, quality) for quality, image in jobs]
    model.train(was_training)
    return curve_from_rows(name, rows)
