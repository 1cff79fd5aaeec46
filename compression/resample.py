"""Bicubic resampling shared by the models and the baselines, so both compute the same pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad the bottom/right edges so height and width are multiples of ``multiple``."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


def bicubic_down(x: torch.Tensor, ratio: int) -> torch.Tensor:
    """Antialiased bicubic downscale by an integer ratio (as Pillow's BICUBIC); ratio 1 is the identity."""
    if ratio == 1:
        return x
    height, width = x.shape[-2:]
    if height % ratio or width % ratio:
        raise ValueError(f"image {height}x{width} is not a multiple of ratio {ratio}; pad it first")
    size = (height // ratio, width // ratio)
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)


def bicubic_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic upscale to ``size``; identity when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False)


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """The values an 8-bit file stores: clamp to [0, 1] and round to multiples of 1/255."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0
