"""Tiled inference with bounded memory that computes what the whole-image pass computes.

Both nets are fully convolutional with a finite receptive field, and bicubic resampling has finite support, so
an output pixel depends only on inputs within a fixed margin. The compact grid is cut into tile cores of a
multiple of 16 compact pixels (JPEG macroblocks; a multiple of the ratio in the original); each core is
computed from itself plus a margin on every side, clipped at the image border (where the whole-image pass sees
the same border), and only the core is kept. Margins, in compact pixels, come from the nets themselves
(``tile_margin()``, by family: :mod:`models`); for the default families:

- ComCNN: ``depth + 3``. Its body reaches at most ``depth`` compact pixels (one 3x3 conv per layer; the
  full-resolution conv and the strided one together reach at most 2 input pixels); the antialiased bicubic
  downscale reaches 2 compact pixels (its kernel spans 2 output pixels each side); +1 to spare. ``car`` adds
  its resampling window's half-width.
- RecCNN: ``ceil(depth / ratio) + 3``. The bicubic upscale's 4 taps reach 2 compact pixels and its ``depth``
  3x3 convs ``depth`` full-resolution pixels; +1 to spare. Other families put their own reach there (in
  compact pixels when the body runs on the compact grid, ``pixelshuffle``); a strided body (``unet``) also
  rounds the margin up to its alignment, ``2^levels``, so every tile starts on its stride grid (cores are
  multiples of 16) and computes what the whole image computes.

Tiled results equal the whole-image pass to float rounding (tested to 1e-5), not bit for bit: convolutions sum
in another order on another tile shape. A net with a layer that pools over space (GroupNorm, channel
attention) is not local and runs whole (:func:`tilings`). Tiles run on the model's device; the results are
gathered on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .inference import decode_plan
from .models import COMCNN_FAMILIES, RECCNN_FAMILIES, ChannelAttention, ShrinkModel

DEFAULT_TILE = 512  # original pixels per tile core side (before margins)
MACROBLOCK = 16  # tile cores are whole JPEG macroblocks of the compact image
NON_LOCAL = (nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d, ChannelAttention)


class Span(NamedTuple):
    """One tile along one axis, in compact pixels: the core [core0, core1) inside the input [in0, in1)."""

    core0: int
    core1: int
    in0: int
    in1: int

    @property
    def keep(self) -> slice:
        """The core's position inside the tile's output (in compact pixels)."""
        return slice(self.core0 - self.in0, self.core1 - self.in0)


@dataclass(frozen=True)
class Tiling:
    core: int | None = None  # compact pixels per core side; None: the whole image in one piece
    margin: int = 0  # compact pixels of context on each side of a core

    def spans(self, length: int) -> list[Span]:
        if self.core is None or self.core >= length:
            return [Span(0, length, 0, length)]
        return [
            Span(
                start,
                min(start + self.core, length),
                max(0, start - self.margin),
                min(length, start + self.core + self.margin),
            )
            for start in range(0, length, self.core)
        ]


def comcnn_margin(config: ModelConfig) -> int:
    return COMCNN_FAMILIES[config.comcnn.family].margin(config.comcnn, config.ratio)


def reccnn_margin(config: ModelConfig) -> int:
    return RECCNN_FAMILIES[config.reccnn.family].margin(config.reccnn, config.ratio)


def is_local(net: nn.Module) -> bool:
    """False when a layer pools over space (the net's output then depends on the whole image)."""
    return not any(isinstance(layer, NON_LOCAL) for layer in net.modules())


def core_size(tile: int, ratio: int) -> int | None:
    """Compact pixels per tile core for ``tile`` original pixels, a multiple of 16; None (untiled) for 0."""
    if tile <= 0:
        return None
    return max(MACROBLOCK, tile // ratio // MACROBLOCK * MACROBLOCK)


def tilings(model: ShrinkModel, tile: int = DEFAULT_TILE) -> tuple[Tiling, Tiling]:
    """(ComCNN tiling, RecCNN tiling) for ``tile`` original pixels per core side; 0 = untiled."""
    core = core_size(tile, model.ratio)
    com = Tiling(core if is_local(model.comcnn) else None, model.comcnn.tile_margin())
    rec = Tiling(core if is_local(model.reccnn) else None, model.reccnn.tile_margin())
    return com, rec


def compact_size(height: int, width: int, ratio: int) -> tuple[int, int]:
    return -(-height // ratio), -(-width // ratio)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _input_tile(pixels: torch.Tensor, row: Span, col: Span, ratio: int) -> torch.Tensor:
    """The original under compact rows/cols [in0, in1) as 1x3xhxw floats in [0, 1], replicate-padded past
    the bottom/right edge exactly as :func:`resample.pad_to_multiple` pads the whole image."""
    height, width = pixels.shape[-2:]
    top, bottom, left, right = row.in0 * ratio, row.in1 * ratio, col.in0 * ratio, col.in1 * ratio
    tile = pixels[:, top : min(bottom, height), left : min(right, width)].float()[None] / 255.0
    pad = (0, right - min(right, width), 0, bottom - min(bottom, height))
    return F.pad(tile, pad, mode="replicate") if any(pad) else tile


@torch.no_grad()
def compact_image(model: ShrinkModel, pixels: torch.Tensor, tiling: Tiling) -> torch.Tensor:
    """The ComCNN's compact image of a uint8 3xHxW image: 1x3xhxw float on the CPU, before 8-bit rounding.

    Equals ``model.compress(pad_to_multiple(x, ratio))["compact"]`` (what evaluation stores).
    """
    ratio, device = model.ratio, _device(model)
    rows, cols = compact_size(*pixels.shape[-2:], ratio)
    out = torch.empty(1, 3, rows, cols)
    for row in tiling.spans(rows):
        for col in tiling.spans(cols):
            compact = model.compress(_input_tile(pixels, row, col, ratio).to(device))["compact"]
            out[..., row.core0 : row.core1, col.core0 : col.core1] = compact[..., row.keep, col.keep].cpu()
    return out


def tile_grid(
    model: ShrinkModel, decoded: torch.Tensor, size: tuple[int, int], tiling: Tiling
) -> Iterator[tuple[torch.Tensor, tuple[int, int], slice, slice, slice, slice]]:
    """(decoded tile, its upscale's size, rows, cols, rows and cols inside the tile's output) of each tile."""
    ratio = model.ratio
    height, width = size
    for row in tiling.spans(decoded.shape[-2]):
        for col in tiling.spans(decoded.shape[-1]):
            tile = decoded[..., row.in0 : row.in1, col.in0 : col.in1]
            up_size = ((row.in1 - row.in0) * ratio, (col.in1 - col.in0) * ratio)
            rows = slice(row.core0 * ratio, min(row.core1 * ratio, height))
            cols = slice(col.core0 * ratio, min(col.core1 * ratio, width))
            local_rows = slice(rows.start - row.in0 * ratio, rows.stop - row.in0 * ratio)
            local_cols = slice(cols.start - col.in0 * ratio, cols.stop - col.in0 * ratio)
            yield tile, up_size, rows, cols, local_rows, local_cols


@torch.no_grad()
def reconstruction_tiles(
    model: ShrinkModel,
    decoded: torch.Tensor,
    size: tuple[int, int],
    tiling: Tiling,
    quality: int | None = None,
) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """(rows, cols, x_hat tile) covering the HxW reconstruction of a decoded 1x3xhxw compact image.

    The tiles together equal ``model.reconstruct(decoded, padded, quality)["x_hat"][..., :H, :W]`` before
    rounding.
    """
    device = _device(model)
    for tile, up_size, rows, cols, local_rows, local_cols in tile_grid(model, decoded, size, tiling):
        x_hat = model.reconstruct(tile.to(device), up_size, quality)["x_hat"]
        yield rows, cols, x_hat[..., local_rows, local_cols].float().cpu()


def reconstruct_image(
    model: ShrinkModel,
    decoded: torch.Tensor,
    size: tuple[int, int],
    tiling: Tiling,
    quality: int | None = None,
) -> torch.Tensor:
    """The 1x3xHxW float reconstruction before 8-bit rounding (for tests and analysis)."""
    out = torch.empty(1, 3, *size)
    for rows, cols, tile in reconstruction_tiles(model, decoded, size, tiling, quality):
        out[..., rows, cols] = tile
    return out


def reconstruct_uint8(
    model: ShrinkModel,
    decoded: torch.Tensor,
    size: tuple[int, int],
    tiling: Tiling,
    quality: int | None = None,
    fast: bool = True,
) -> np.ndarray:
    """The HxWx3 uint8 reconstruction, rounded as :func:`resample.quantize_8bit` rounds; only 8-bit pixels
    of the whole image are ever held.

    ``fast`` (a CPU model in eval mode): the RecCNN runs as :func:`inference.decode_plan` prepares it, within
    one level of the plain forward's pixels (float rounding); otherwise, and for any other model, it is the
    plain forward of :func:`reconstruction_tiles`.
    """
    out = np.empty((*size, 3), dtype=np.uint8)
    plan = decode_plan(model.reccnn) if fast else None
    if plan is None:
        for rows, cols, tile in reconstruction_tiles(model, decoded, size, tiling, quality):
            values = torch.round(tile[0].clamp(0.0, 1.0) * 255.0).to(torch.uint8)
            out[rows, cols] = values.permute(1, 2, 0).numpy()
        return out
    pixels = torch.from_numpy(out)
    with torch.inference_mode():
        for tile, up_size, rows, cols, local_rows, local_cols in tile_grid(model, decoded, size, tiling):
            x_hat = plan(tile, up_size, quality)[0, local_rows, local_cols]  # HxWx3, channels last
            pixels[rows, cols] = x_hat.clamp_(0.0, 1.0).mul_(255.0).round_()  # integers: exact as uint8
    return out
