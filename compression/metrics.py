"""Image quality metrics, rate, and the training reconstruction loss.

Evaluation uses :func:`ms_ssim` (RGB MS-SSIM from pytorch-msssim, 5 scales, 11-tap Gaussian window, data
range 1), the metric the field reports. Training crops are often too small for 5 scales, so
:func:`ms_ssim_train` falls back to fewer scales with the first standard weights renormalised.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim as _pt_ms_ssim
from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

# Wang et al. (2003) scale weights, finest first; pytorch-msssim's defaults (they sum to 1.0001).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WIN_SIZE = 11
WIN_SIGMA = 1.5
DB_EPSILON = 1e-10  # msssim_db(1.0) = 100 dB instead of infinity


def float32(metric):
    """Run ``metric`` in float32 even inside ``torch.autocast``: autocast would run pytorch-msssim's Gaussian
    filter (an ``F.conv2d``) in bf16, whatever the inputs' dtype, and bf16 is too coarse for SSIM's variance
    terms (on CPU bf16: 1 - MS-SSIM off by up to 3x, values above 1, gradients at cosine 0.2-0.6 to fp32)."""

    @functools.wraps(metric)
    def in_float32(x: torch.Tensor, *args, **kwargs):
        with torch.autocast(device_type=x.device.type, enabled=False):
            return metric(x, *args, **kwargs)

    return in_float32


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"expected two BxCxHxW tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    # Same values; pytorch-msssim's grouped Gaussian convolutions run about 3x faster on CPU in this layout.
    return x.float().contiguous(memory_format=torch.channels_last)


@float32
def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image (B,), data range 1; identical images give +inf."""
    _check_pair(x, y)
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1)
    return -10.0 * torch.log10(mse)


def ms_ssim_levels(height: int, width: int, win_size: int = WIN_SIZE) -> int:
    """How many MS-SSIM scales fit an image: k scales need min side > (win_size - 1) * 2**(k - 1), at most 5.

    This is pytorch-msssim's own rule for 5 scales (min side > 160) applied to fewer scales
    (128 px -> 4, 64 px -> 3). Returns 0 when not even single-scale SSIM fits.
    """
    side = min(height, width)
    levels = 0
    while levels < len(MS_SSIM_WEIGHTS) and side > (win_size - 1) * 2**levels:
        levels += 1
    return levels


@float32
def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """RGB MS-SSIM per image (B,): the evaluation metric (5 scales, 11-tap window, data range 1)."""
    _check_pair(x, y)
    height, width = x.shape[-2:]
    if ms_ssim_levels(height, width) < len(MS_SSIM_WEIGHTS):
        raise ValueError(f"MS-SSIM needs both sides > {(WIN_SIZE - 1) * 16} px, got {height}x{width}")
    x, y = _channels_last(x), _channels_last(y)
    return _pt_ms_ssim(x, y, data_range=1.0, size_average=False)


def ms_ssim_train(x: torch.Tensor, y: torch.Tensor, levels: int | None = None) -> torch.Tensor:
    """Differentiable mean MS-SSIM over a batch, for training crops of any size: the mean of
    :func:`ms_ssim_train_per_image`.
    """
    return ms_ssim_train_per_image(x, y, levels).mean()


@float32
def ms_ssim_train_per_image(x: torch.Tensor, y: torch.Tensor, levels: int | None = None) -> torch.Tensor:
    """Differentiable MS-SSIM per image (B,), for training crops of any size.

    ``levels`` defaults to :func:`ms_ssim_levels` of the crop. With 5 levels this computes exactly what
    ``pytorch_msssim.ms_ssim(x, y, data_range=1)`` computes (same weights, same operations). With fewer
    levels (crops of 160 px or less: 128 px -> 4, 64 px -> 3) it uses the first ``levels`` standard weights
    renormalised to sum to 1, with pytorch-msssim's own ``_ssim`` and ``_fspecial_gauss_1d``:
    ``pytorch_msssim.ms_ssim`` asserts the 5-scale minimum size and cannot be used on such crops. Values at
    fewer levels are therefore not comparable with evaluation MS-SSIM; they are a training signal only.
    Computed in float32, also inside autocast (:func:`float32`).
    """
    _check_pair(x, y)
    fits = ms_ssim_levels(*x.shape[-2:])
    levels = fits if levels is None else levels
    if not 1 <= levels <= fits:
        raise ValueError(f"{levels} MS-SSIM levels don't fit a {x.shape[-2]}x{x.shape[-1]} crop (max {fits})")
    weights = MS_SSIM_WEIGHTS[:levels]
    if levels < len(MS_SSIM_WEIGHTS):
        weights = tuple(w / sum(weights) for w in weights)
    x, y = _channels_last(x), _channels_last(y)
    weights_tensor = x.new_tensor(weights)
    win = _fspecial_gauss_1d(WIN_SIZE, WIN_SIGMA).repeat([x.shape[1], 1, 1, 1])
    mcs = []
    for level in range(levels):
        ssim_per_channel, cs = _ssim(x, y, data_range=1.0, win=win, size_average=False)
        if level < levels - 1:
            mcs.append(torch.relu(cs))
            padding = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    stacked = torch.stack([*mcs, torch.relu(ssim_per_channel)], dim=0)  # (level, batch, channel)
    return torch.prod(stacked ** weights_tensor.view(-1, 1, 1), dim=0).mean(dim=1)


def msssim_db(value: float) -> float:
    """MS-SSIM on a decibel scale, -10 log10(1 - value); values >= 1 are capped at 100 dB."""
    return -10.0 * math.log10(max(1.0 - float(value), DB_EPSILON))


def msssim_from_db(value_db: float) -> float:
    """The inverse of :func:`msssim_db`: ``1 - 10 ** (-value_db / 10)``."""
    return 1.0 - 10.0 ** (-float(value_db) / 10.0)


def bpp(nbytes: int, height: int, width: int) -> float:
    """Bits per pixel of a file of ``nbytes`` holding a ``height`` x ``width`` image."""
    return 8.0 * nbytes / (height * width)


@float32
def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, alpha: float, mse_scale: float) -> torch.Tensor:
    """``alpha * mse_scale * MSE + (1 - alpha) * (1 - MS-SSIM)``; a term whose weight is 0 is not computed."""
    loss = x_hat.new_zeros((), dtype=torch.float32)
    if alpha > 0:
        loss = loss + alpha * mse_scale * F.mse_loss(x_hat.float(), x.float())
    if alpha < 1:
        loss = loss + (1.0 - alpha) * (1.0 - ms_ssim_train(x_hat, x))
    return loss


@float32
def gain_units_loss(
    x_hat: torch.Tensor, x: torch.Tensor, rate: torch.Tensor, slope_db: float
) -> torch.Tensor:
    """The ComCNN's loss in the units of the dev gain over JPEG: ``slope_db * ln(rate) - MS-SSIM dB`` per
    image, averaged over the batch.

    The gain that the guard and a search judge is MS-SSIM dB minus JPEG's MS-SSIM dB at the same rate, and
    near an operating point JPEG's curve is ``c + slope_db * ln(bpp)``: lowering this loss raises the gain.
    ``rate`` (B,) is any per-image estimate proportional to the file size (the JPEG rate proxy): only its
    relative change matters, so the proxy's overall scale error cancels. MS-SSIM is the training one
    (:func:`ms_ssim_train_per_image`), so on small crops it has fewer scales than the evaluation's.
    """
    distortion = (1.0 - ms_ssim_train_per_image(x_hat, x)).clamp_min(DB_EPSILON)
    return (slope_db * torch.log(rate.float()) + 10.0 * torch.log10(distortion)).mean()
