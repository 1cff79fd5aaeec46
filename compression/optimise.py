"""Encoder-side optimisation of the compact image: the most a ComCNN could add for one image.

The encoder holds the original ``x`` and the decoder (the RecCNN). For one image it can treat the compact
image ``c`` itself as the variable: start from what the bundle's ComCNN makes (bicubic, for the RecCNN-only
models the search settles on) and take Adam steps on

    loss(c) = slope * ln(R(c)) - D_dB(x, RecCNN(up(JPEG(c))))

with the differentiable JPEG (:class:`~.jpeg_proxy.JpegProxy`) standing in for the codec and its scan-bit
estimate for ``R``. ``D_dB`` is MS-SSIM in dB (``distortion="msssim"``) or PSNR (``"mse"``). ``slope`` ties
the rate term to the target: it is this image's own plain RD slope at the operating quality, in dB per unit of
ln(bytes), measured on real files a few qualities either side. A step that lowers the loss therefore moves the
image above its plain curve at the operating point, which is what BD-rate rewards; no free ``lambda``.

No ComCNN can do better for that image with that RecCNN (a ComCNN is one function for every image; this is
the optimum per image, up to the optimiser), so the gain measured is an **upper bound** of what a ComCNN could
add. The steps run at a constant learning rate, so the iterate after ``k`` steps does not depend on the
budget: :func:`optimisation_path` yields every step's best iterate and a benchmark reads several budgets off
one run. The result is checked on the real codec's file (:mod:`.api`), and the plain compact image is kept
whenever it measures better. Deterministic: no randomness is drawn.

Images larger than ``tile`` original pixels a side are optimised tile by tile (cores of whole JPEG
macroblocks; only a core's pixels move, its margin is context): a core's loss is measured on its own output
pixels and its rate over its tile, so the tiles trade rate for distortion with the same slope.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .api import (
    ImageLike,
    OpenBundle,
    RateError,
    as_pixels,
    check_bpp,
    decompress_image,
    file_within,
    file_writer,
    reconstruction_quality,
)
from .channel import stored_values
from .choose import check_target, lowest_quality_reaching
from .codecs import Codec, to_uint8
from .container import read_header
from .jpeg_proxy import JpegProxy
from .metrics import DB_EPSILON, MS_SSIM_WEIGHTS, ms_ssim_levels, ms_ssim_train_per_image
from .models import ShrinkModel, frozen
from .tiling import DEFAULT_TILE, MACROBLOCK, Tiling, compact_image, tilings

DISTORTIONS = ("msssim", "mse")
MAX_STEPS = 10_000
LEARNING_RATE = 5e-4  # per step, in [0, 1] pixel units; 2.5e-4..1e-3 gained alike on dev, 2e-3 diverged
OPTIMISE_TILE = 1024  # original pixels per core side: a Kodak image is one tile
SLOPE_SPAN = 5  # qualities either side of the operating one for the RD slope
SLOPE_BOUNDS = (0.5, 40.0)  # dB per ln(bytes): a wider slope is a measuring accident, clamped


def check_steps(steps: int) -> None:
    if not (isinstance(steps, int) and 0 <= steps <= MAX_STEPS):
        raise ValueError(f"optimisation steps lie in 0..{MAX_STEPS}, got {steps}")


def check_distortion(distortion: str) -> None:
    if distortion not in DISTORTIONS:
        raise ValueError(f"unknown distortion {distortion!r}; choose one of {DISTORTIONS}")


def quality_db(x_hat: torch.Tensor, x: torch.Tensor, distortion: str) -> torch.Tensor:
    """Differentiable quality in dB of a (1, 3, H, W) reconstruction: MS-SSIM dB or PSNR."""
    if distortion == "mse":
        mse = torch.mean((x_hat.float() - x.float()) ** 2).clamp_min(DB_EPSILON)
        return -10.0 * torch.log10(mse)
    value = ms_ssim_train_per_image(x_hat.float(), x.float())[0]
    return -10.0 * torch.log10((1.0 - value).clamp_min(DB_EPSILON))


def measured_db(psnr_value: float, msssim_value: float | None, distortion: str) -> float:
    """The encoder's measure of a decoded file, in the optimisation's own units."""
    if distortion == "mse":
        return psnr_value
    return -10.0 * math.log10(max(1.0 - float(msssim_value), DB_EPSILON))


def rd_objective(size: int, quality_db_value: float, slope: float) -> float:
    """``slope * ln(bytes) - dB`` of a real file: lower is better; the proxy's loss estimates it."""
    return slope * math.log(size) - quality_db_value


def clamp_slope(slope: float) -> float:
    low, high = SLOPE_BOUNDS
    return min(max(slope, low), high) if math.isfinite(slope) else low


@dataclass(frozen=True)
class Step:
    """After one step: its number, the proxy's loss of the iterate, and the best compact image so far (1x3xhxw
    float, per tile the iterate of lowest loss)."""

    step: int
    loss: float
    best: torch.Tensor


class _Tile:
    """One tile core's variables (its compact pixels), Adam state and best loss; its margin is context."""

    def __init__(self, model, proxy, x, start, row, col, quality, distortion, lr):
        ratio, device = model.ratio, start.device
        height, width = x.shape[-2:]
        self.model, self.proxy, self.row, self.col = model, proxy, row, col
        self.quality, self.distortion = quality, distortion
        self.core = (slice(row.core0, row.core1), slice(col.core0, col.core1))
        self.region = (slice(row.in0, row.in1), slice(col.in0, col.in1))
        self.pixels = start[..., self.core[0], self.core[1]].clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.pixels], lr=lr)
        rows = slice(row.core0 * ratio, min(row.core1 * ratio, height))
        cols = slice(col.core0 * ratio, min(col.core1 * ratio, width))
        self.output = (
            slice(rows.start - row.in0 * ratio, rows.stop - row.in0 * ratio),
            slice(cols.start - col.in0 * ratio, cols.stop - col.in0 * ratio),
        )
        self.target = x[..., rows, cols]
        self.up_size = ((row.in1 - row.in0) * ratio, (col.in1 - col.in0) * ratio)
        self.qualities = torch.tensor([quality], device=device)
        self.best_loss = math.inf

    def loss(self, current: torch.Tensor, slope: float) -> torch.Tensor:
        """The proxy's loss of this core's pixels amid ``current`` (the other tiles' pixels as context)."""
        region = current[..., self.region[0], self.region[1]].detach().clone()
        region[..., self.row.keep, self.col.keep] = self.pixels
        coded = self.proxy(stored_values(region), self.qualities)
        x_hat = self.model.reconstruct(coded["x_hat"], self.up_size, self.quality)["x_hat"]
        x_hat = x_hat[..., self.output[0], self.output[1]]
        return slope * torch.log(coded["scan_bits"][0]) - quality_db(x_hat, self.target, self.distortion)

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def optimisation_path(
    model: ShrinkModel,
    pixels: torch.Tensor,
    compact: torch.Tensor,
    codec: Codec,
    quality: int,
    slope: float,
    steps: int,
    distortion: str = "msssim",
    lr: float = LEARNING_RATE,
    tile: int = OPTIMISE_TILE,
) -> Iterator[Step]:
    """After each step (step 0: the start), the best compact image so far by the proxy's loss, per tile, for
    uint8 3xHxW ``pixels``.

    ``compact``: the start, 1x3xhxw float (:func:`start_compact`); ``codec``: the bundle's codec, whose tables
    and subsampling the proxy copies. Every tile takes its step ``k`` before any takes step ``k + 1``, each
    with the others' current pixels as context. ``Step.best`` is one tensor, updated in place.
    """
    check_steps(steps)
    check_distortion(distortion)
    device = next(model.parameters()).device
    subsampling = getattr(codec, "subsampling", "4:2:0")
    proxy = JpegProxy(subsampling, tables=codec.tables, max_quantizer=codec.max_quantizer)
    core = max(MACROBLOCK, tile // model.ratio // MACROBLOCK * MACROBLOCK) if tile > 0 else None
    tiling = Tiling(core, tilings(model, 0)[1].margin)
    current = compact.to(device).clone()
    best = compact.clone()
    x = pixels.float()[None].to(device) / 255.0
    rows, cols = compact.shape[-2:]
    tiles = [
        _Tile(model, proxy, x, current, row, col, quality, distortion, lr)
        for row in tiling.spans(rows)
        for col in tiling.spans(cols)
    ]
    with frozen(model):
        for step in range(steps + 1):
            total = 0.0
            for tile_ in tiles:
                loss = tile_.loss(current, slope)
                value = float(loss.detach())
                total += value
                if value < tile_.best_loss:
                    tile_.best_loss = value
                    best[..., tile_.core[0], tile_.core[1]] = tile_.pixels.detach().clamp(0.0, 1.0).cpu()
                if step < steps:
                    tile_.step(loss)
                    current[..., tile_.core[0], tile_.core[1]] = tile_.pixels.detach()
            yield Step(step, total, best)


def start_compact(model: ShrinkModel, pixels: torch.Tensor, tile: int) -> torch.Tensor:
    """The plain encoder's compact image (1x3xhxw float, before 8-bit rounding)."""
    return compact_image(model, pixels, tilings(model, tile)[0])


def optimise(
    model: ShrinkModel,
    pixels: torch.Tensor,
    start: torch.Tensor,
    codec: Codec,
    quality: int,
    slope: float,
    steps: int,
    distortion: str = "msssim",
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """The best compact image (HxWx3 uint8) after ``steps`` steps from ``start`` (optimisation_path)."""
    last = None
    for last in optimisation_path(model, pixels, start, codec, quality, slope, steps, distortion):
        if progress is not None:
            progress(last.step, steps)
    return to_uint8(last.best[0])


# ---------------------------------------------------------------- the encoder: real files decide


@dataclass(frozen=True)
class Optimised:
    """The file kept for a target, and what the encoder measured: ``optimised`` is False when the plain
    compact image's file measured better (and is the one kept). ``plain_db``/``kept_db`` are the decoded
    quality in the optimisation's units (MS-SSIM dB or PSNR); ``slope`` is the RD slope the rate term used."""

    data: bytes
    optimised: bool
    quality: int
    plain_bytes: int
    plain_db: float
    kept_db: float
    slope: float


class ImageEncoder:
    """One image and one bundle: files of a compact image at any quality, decoded and measured."""

    def __init__(self, bundle: OpenBundle, pixels: torch.Tensor, distortion: str, tile: int):
        self.bundle, self.pixels, self.distortion, self.tile = bundle, pixels, distortion, tile
        self.start = start_compact(bundle.model, pixels, tile)
        self._measured: dict[bytes, tuple[float, float | None]] = {}

    def writer(self, compact: np.ndarray) -> Callable[[int], bytes]:
        return file_writer(self.bundle, self.pixels, compact)

    def quality_of(self, data: bytes) -> tuple[float, float | None]:
        """(PSNR, MS-SSIM) of the decoded file against the original; each file is decoded once (the choice
        between plain and optimised measures the same files again)."""
        if data not in self._measured:
            decoded = decompress_image(data, self.bundle, tile=self.tile)
            self._measured[data] = reconstruction_quality(decoded, self.pixels)
        return self._measured[data]

    def db(self, data: bytes) -> float:
        return measured_db(*self.quality_of(data), self.distortion)

    def msssim(self, data: bytes) -> float:
        return self.quality_of(data)[1]

    def slope(self, file_at: Callable[[int], bytes], quality: int) -> float:
        """This image's plain RD slope at ``quality``: dB per unit of ln(bytes), over quality +-SLOPE_SPAN."""
        low, high = max(1, quality - SLOPE_SPAN), min(100, quality + SLOPE_SPAN)
        below, above = file_at(low), file_at(high)
        rise = self.db(above) - self.db(below)
        run = math.log(len(above)) - math.log(len(below))
        return clamp_slope(rise / run) if run > 0 else SLOPE_BOUNDS[0]


def compress_optimised(
    image: ImageLike,
    bundle: OpenBundle,
    *,
    steps: int,
    quality: int | None = None,
    bpp: float | None = None,
    msssim: float | None = None,
    distortion: str = "msssim",
    tile: int = DEFAULT_TILE,
    progress: Callable[[int, int], None] | None = None,
) -> Optimised:
    """The shrink file of ``image`` with its compact image optimised for ``steps`` steps at the plain
    encoder's operating quality, checked on real files: for ``quality`` (default: the bundle's) the lower
    ``slope * ln(bytes) - dB``; for ``bpp`` the better quality within the budget; for ``msssim`` the smaller
    file reaching it. The plain compact image's file is kept whenever it measures at least as well."""
    check_steps(steps)
    check_distortion(distortion)
    if sum(value is not None for value in (quality, bpp, msssim)) > 1:
        raise ValueError("give one of quality, bpp or msssim")
    if bpp is not None:
        check_bpp(bpp)
    if msssim is not None:
        check_target(None, msssim)
    pixels = as_pixels(image)
    if ms_ssim_levels(*pixels.shape[-2:]) < len(MS_SSIM_WEIGHTS):
        raise ValueError(f"optimising needs both sides over 160 px, the image is {tuple(pixels.shape[1:])}")
    encoder = ImageEncoder(bundle, pixels, distortion, tile)
    plain_at = encoder.writer(to_uint8(encoder.start[0]))
    operating, plain = _operating_file(encoder, plain_at, quality or bundle.default_quality, bpp, msssim)
    slope = encoder.slope(plain_at, operating)
    found = optimise(
        bundle.model,
        pixels,
        encoder.start,
        bundle.jpeg_codec(),
        operating,
        slope,
        steps,
        distortion,
        progress,
    )
    candidate_at = encoder.writer(found)
    if msssim is not None:
        reached = lowest_quality_reaching(candidate_at, encoder.msssim, msssim)
        better = reached is not None and len(reached[0]) < len(plain)
        candidate = reached[0] if reached is not None else plain
    else:
        candidate = candidate_at(operating) if bpp is None else file_within(candidate_at, bpp, pixels)[1]
        better = _better(encoder, candidate, plain, slope, by_rate=bpp is None)
    kept = candidate if better else plain
    plain_db = encoder.db(plain)
    return Optimised(
        kept,
        better,
        read_header(kept).quality,
        len(plain),
        plain_db,
        encoder.db(kept) if better else plain_db,
        slope,
    )


def _operating_file(encoder: ImageEncoder, file_at, quality: int, bpp: float | None, msssim: float | None):
    """(quality, file) of the plain encoder for the target."""
    if bpp is not None:
        return file_within(file_at, bpp, encoder.pixels)
    if msssim is not None:
        reached = lowest_quality_reaching(file_at, encoder.msssim, msssim)
        if reached is None:
            raise RateError(f"MS-SSIM {msssim} cannot be met: quality 100 decodes below it")
        return reached[1], reached[0]
    return quality, file_at(quality)


def _better(encoder: ImageEncoder, candidate: bytes, plain: bytes, slope: float, by_rate: bool) -> bool:
    """Whether the candidate file measures better than the plain one: by ``slope * ln(bytes) - dB`` at a
    fixed quality (``by_rate``), else by its quality alone (within the same byte budget)."""
    if candidate == plain:
        return False
    candidate_db, plain_db = encoder.db(candidate), encoder.db(plain)
    if not by_rate:
        return candidate_db > plain_db
    return rd_objective(len(candidate), candidate_db, slope) < rd_objective(len(plain), plain_db, slope)


__all__ = [
    "DISTORTIONS",
    "MAX_STEPS",
    "ImageEncoder",
    "Optimised",
    "Step",
    "compress_optimised",
    "optimisation_path",
    "optimise",
    "start_compact",
]
