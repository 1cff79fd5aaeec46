"""Side-by-side comparisons at (nearly) the same bytes: original, JPEG, shrink — what people look at.

JPEG's quality is chosen so its file is the closest in size to the shrink file; metrics are on full images,
the crops only show a centre window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .api import compact_bytes
from .codecs import Codec, JpegCodec
from .data import NamedImage
from .evaluate import reconstruct_bytes
from .metrics import ms_ssim
from .models import ShrinkModel


@dataclass
class Comparison:
    image: str
    crops: dict[str, np.ndarray]  # "original", "jpeg", "shrink": HxWx3 uint8 centre crops
    bytes: dict[str, int]  # "jpeg", "shrink"
    msssim: dict[str, float]  # "jpeg", "shrink" (full image)
    jpeg_quality: int
    shrink_quality: int

    def strip(self, gap: int = 4) -> np.ndarray:
        """original | JPEG | shrink, side by side with white gaps."""
        tiles = [self.crops[key] for key in ("original", "jpeg", "shrink")]
        spacer = np.full((tiles[0].shape[0], gap, 3), 255, dtype=np.uint8)
        return np.concatenate([tiles[0], spacer, tiles[1], spacer, tiles[2]], axis=1)

    def save_strip(self, path) -> None:
        Image.fromarray(self.strip()).save(path)


def centre_crop(array: np.ndarray, side: int) -> np.ndarray:
    height, width = array.shape[:2]
    top, left = max((height - side) // 2, 0), max((width - side) // 2, 0)
    return array[top : top + side, left : left + side]


def _to_array(x: torch.Tensor) -> np.ndarray:
    return (x[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def compare_at_same_bytes(
    model: ShrinkModel, image: NamedImage, codec: Codec, quality: int, crop: int = 128
) -> Comparison:
    device = next(model.parameters()).device
    model.eval()
    x = (image.pixels.float() / 255.0)[None].to(device)
    data = compact_bytes(model, image.pixels, codec, quality, tile=0)
    x_hat = reconstruct_bytes(model, data, codec, image.size, quality)
    original = image.pixels.permute(1, 2, 0).numpy()
    jpeg = JpegCodec()
    files = {q: jpeg.encode(original, q) for q in range(1, 101)}
    jpeg_quality = min(files, key=lambda q: abs(len(files[q]) - len(data)))
    jpeg_bytes = len(files[jpeg_quality])
    jpeg_pixels = jpeg.decode(files[jpeg_quality])
    jpeg_x = torch.from_numpy(jpeg_pixels.copy()).permute(2, 0, 1)[None].float().div(255).to(device)
    return Comparison(
        image=image.name,
        crops={
            "original": centre_crop(original, crop),
            "jpeg": centre_crop(jpeg_pixels, crop),
            "shrink": centre_crop(_to_array(x_hat), crop),
        },
        bytes={"jpeg": jpeg_bytes, "shrink": len(data)},
        msssim={"jpeg": float(ms_ssim(jpeg_x, x)[0]), "shrink": float(ms_ssim(x_hat, x)[0])},
        jpeg_quality=jpeg_quality,
        shrink_quality=quality,
    )
