"""Rate–distortion choice at the encoder: the encoder holds the original, so it can decode its candidates
and keep, for this image, the best one.

:func:`choose` tries the models of a bundle or a codec family (``effort`` members, the most promising first
by their test curves) and, for each, the quality that meets the target; it decodes every candidate file and
measures it against the original:
- ``bpp=T``: the highest quality within T bits per pixel, then the candidate with the highest MS-SSIM;
- ``msssim=Q``: the smallest file whose decoded MS-SSIM reaches Q (what users mean by "good enough").
The decoder needs nothing new: the file's header names the member that made it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .api import (
    ImageLike,
    OpenBundle,
    RateError,
    as_pixels,
    check_bpp,
    compress_image,
    decompress_image,
    open_bundle,
    reconstruction_quality,
)
from .container import read_header
from .family import is_family, load_family
from .metrics import MS_SSIM_WEIGHTS, ms_ssim_levels, msssim_db
from .rd import metric_at_rate, rate_at_metric
from .tiling import DEFAULT_TILE

QUALITIES = (1, 100)


@dataclass(frozen=True)
class Choice:
    """The file kept, and what was measured: its model (a family member's name, else the bundle path),
    quality, MS-SSIM of the decoded image against the original, and how many files were decoded."""

    data: bytes
    model: str
    quality: int
    msssim: float
    decoded: int


def check_target(bpp: float | None, msssim: float | None) -> None:
    if (bpp is None) == (msssim is None):
        raise ValueError("give a target bpp or a target MS-SSIM, exactly one")
    if msssim is not None and not 0 < msssim < 1:
        raise ValueError(f"a target MS-SSIM lies in (0, 1), got {msssim}")
    if bpp is not None:
        check_bpp(bpp)


def candidates(
    path: str | Path, bpp: float | None, msssim: float | None, effort: int
) -> list[tuple[str, str]]:
    """(name, bundle path) of the models to try, the most promising first: a bundle alone; of a family the
    ``effort`` members whose test curve is highest at ``bpp`` (or cheapest at ``msssim``)."""
    if effort < 1:
        raise ValueError(f"effort must be at least 1, got {effort}")
    if not is_family(path):
        return [(str(path), str(path))]
    family = load_family(path)
    if msssim is not None:
        ranked = sorted(family.members, key=lambda m: rate_at_metric(m.curve, msssim_db(msssim)))
    else:
        first = family.member_at(bpp)  # effort 1 is the choice by the average image
        rest = sorted(family.members, key=lambda m: -metric_at_rate(m.curve, bpp, family.metric))
        ranked = [first, *(m for m in rest if m is not first)]
    return [(m.name, str(family.bundle_path(m))) for m in ranked[:effort]]


def open_candidates(
    model: str | Path, bpp: float | None, msssim: float | None, effort: int
) -> list[tuple[str, OpenBundle]]:
    """The :func:`candidates` opened (verified and loaded once, for any number of images)."""
    check_target(bpp, msssim)
    return [(name, open_bundle(path)) for name, path in candidates(model, bpp, msssim, effort)]


def choose(
    image: ImageLike,
    model: str | Path | list[tuple[str, OpenBundle]],
    *,
    bpp: float | None = None,
    msssim: float | None = None,
    effort: int = 2,
    tile: int = DEFAULT_TILE,
) -> Choice:
    """The best file of ``image`` for the target (``bpp`` or ``msssim``, exactly one) among the candidates
    of ``model`` (a bundle, family, checkpoint or ``zoo:NAME``; or its :func:`open_candidates`)."""
    check_target(bpp, msssim)
    pixels = as_pixels(image)
    if ms_ssim_levels(*pixels.shape[-2:]) < len(MS_SSIM_WEIGHTS):
        raise ValueError(
            f"choosing by MS-SSIM needs both sides over 160 px, the image is {tuple(pixels.shape[1:])}"
        )
    tried = model if isinstance(model, list) else open_candidates(model, bpp, msssim, effort)
    choices = []
    for name, bundle in tried:
        found = (
            _within(pixels, bundle, bpp, tile) if bpp is not None else _reaching(pixels, bundle, msssim, tile)
        )
        if found is not None:
            choices.append(Choice(found[0], name, found[1], found[2], found[3]))
    if not choices:
        target = f"bpp {bpp}" if bpp is not None else f"MS-SSIM {msssim}"
        raise RateError(f"{target} cannot be met by any of the {len(tried)} model(s) tried")
    decoded = sum(choice.decoded for choice in choices)
    best = (
        max(choices, key=lambda c: c.msssim) if bpp is not None else min(choices, key=lambda c: len(c.data))
    )
    return Choice(best.data, best.model, best.quality, best.msssim, decoded)


def measured(pixels: torch.Tensor, bundle: OpenBundle, data: bytes, tile: int) -> float:
    """MS-SSIM of the decoded ``data`` against the original, as evaluation measures it."""
    return reconstruction_quality(decompress_image(data, bundle, tile=tile), pixels)[1]


def _within(pixels, bundle: OpenBundle, bpp: float, tile: int) -> tuple[bytes, int, float, int] | None:
    try:
        data = compress_image(pixels, bundle, bpp=bpp, tile=tile)
    except RateError:
        return None
    return data, read_header(data).quality, measured(pixels, bundle, data, tile), 1


def _reaching(pixels, bundle: OpenBundle, target: float, tile: int) -> tuple[bytes, int, float, int] | None:
    def encode_at(quality: int) -> bytes:
        return compress_image(pixels, bundle, quality=quality, tile=tile)

    return lowest_quality_reaching(encode_at, lambda data: measured(pixels, bundle, data, tile), target)


def lowest_quality_reaching(
    encode_at: Callable[[int], bytes], value_of: Callable[[bytes], float], target: float
) -> tuple[bytes, int, float, int] | None:
    """(file, quality, value, files tried) of the lowest quality in 1..100 whose file's ``value_of`` (the
    decoded MS-SSIM) reaches ``target``, by binary search (it rises with quality); None when even 100 does
    not. Any codec's ``encode`` fits, so the baselines are searched the same way."""
    tried: dict[int, tuple[bytes, float]] = {}

    def reaches(quality: int) -> bool:
        data = encode_at(quality)
        tried[quality] = (data, value_of(data))
        return tried[quality][1] >= target

    low, high = QUALITIES
    if not reaches(high):
        return None
    if reaches(low):
        high = low
    while high - low > 1:
        middle = (low + high) // 2
        if reaches(middle):
            high = middle
        else:
            low = middle
    data, value = tried[high]
    return data, high, value, len(tried)
