"""Baseline RD curves with real codecs: plain JPEG / mozjpeg / jpegli / WebP / AVIF / JPEG XL, and
downscale -> codec -> bicubic upscale.

Rates are ``len()`` of the real file over the ORIGINAL W x H; reconstructions are rounded to 8 bits as a
decoded PNG would be, and measured on full images (batch size 1) against the original. A point is the mean
over images of bpp, MS-SSIM and PSNR, with MS-SSIM dB computed from the mean MS-SSIM (see :mod:`.rd`);
per-image rows are kept in ``RDCurve.per_image``. Codec work runs in a thread pool across images.

Each row also times the file's encode (for the downscale curves: with the downscale) and decode (with the
upscale), wall-clock on its worker thread: the curve's :attr:`~.rd.RDCurve.times`, which ``shrink baselines
--compressai-dir`` writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from .codecs import REFERENCE_CODECS, Codec, build_codec, default_codec_threads, from_uint8, to_uint8
from .config import CodecConfig
from .data import NamedImage
from .rd import RDCurve, curve_from_rows, measure, time_row, timed
from .resample import bicubic_down, bicubic_up, pad_to_multiple, quantize_8bit

# Default quality grids by curve kind ("down" = downscale + codec): 5..95 in steps of 5 for every curve.
# BD-rates depend strongly on the grid ends, because they set the overlapping quality range: on Kodak,
# down2-jpeg vs jpeg is -32.5 % with this grid but -24.6 % once JPEG starts at q10 instead of q5 (the
# overlap then loses the low-rate end where downscaling wins most). The grid contains q10/20/50/90, the
# settings of the reference table in shared/data/README.md.
_GRID = tuple(range(5, 96, 5))
# JPEG XL's "quality" is cjxl's (libjxl's distance from quality: q5..95 -> distance 19.7..0.55), jpegli's is
# its libjpeg-style quality.
BASELINE_CODECS = ("jpeg", "mozjpeg", "webp", "avif", "jpegli", "jpegxl")
DEFAULT_QUALITIES: dict[str, tuple[int, ...]] = {
    kind: _GRID for name in BASELINE_CODECS for kind in (name, f"down-{name}")
}

Row = dict[str, Any]


# A baseline is its codec at a high effort, not at the speed-oriented defaults the training loop uses: libwebp
# method 6, the smallest files Pillow offers (-20.1 % vs JPEG on Kodak; method 4: -16.0 %), and libavif speed
# 4 (-48.3 %; speed 6: -45.8 %; 0.9 s per Kodak image against 0.2 s, where speed 2 takes 2.5 s and speed 0
# 8 s). JPEG is 4:2:0 with optimized Huffman tables, as in the reference figures; mozjpeg is cjpeg's default
# (its imagemagick tables, trellis quantisation, progressive scans, 4:2:0). jpegli is pyjpegli's only
# setting (4:2:0, baseline); JPEG XL is libjxl at effort 7, cjxl's default (:class:`.codecs.JpegXLCodec`).
BASELINE_WEBP_METHOD = 6
BASELINE_AVIF_SPEED = 4


def resolve_codec(codec: Codec | str) -> Codec:
    """A codec instance, or one built by name with the baseline settings above."""
    if not isinstance(codec, str):
        return codec
    if codec in REFERENCE_CODECS:
        return REFERENCE_CODECS[codec]()
    config = CodecConfig(name=codec, webp_method=BASELINE_WEBP_METHOD, avif_speed=BASELINE_AVIF_SPEED)
    return build_codec(config)


def describe_baseline(name: str, data: str, n_images: int) -> str:
    """A CompressAI results file's description of the baseline curve ``name`` ("jpeg", "down2-webp", ...)."""
    codec = resolve_codec(name.split("-", 1)[-1])
    steps = ("bicubic downscale + ", " + bicubic upscale") if name.startswith("down") else ("", "")
    return (
        f"shrink baselines: {name} on {data} ({n_images} images), {codec!r}. encoding_time, decoding_time: "
        f"mean wall-clock seconds per image of {steps[0]}encode, and of decode{steps[1]}, each image on one "
        "codec thread"
    )


def _as_float(image: NamedImage) -> torch.Tensor:
    return (image.pixels.float() / 255.0)[None]


def _map(function: Callable[..., Row], jobs: Sequence[tuple], threads: int) -> list[Row]:
    workers = threads or default_codec_threads()
    if workers == 1 or len(jobs) <= 1:
        return [function(*job) for job in jobs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: function(*job), jobs))


@torch.no_grad()
def _codec_rows(image: NamedImage, codec: Codec, qualities: Sequence[int]) -> list[Row]:
    x = _as_float(image)
    array = image.pixels.permute(1, 2, 0).contiguous().numpy()
    rows = []
    for quality in qualities:
        data, encoding = timed(codec.encode, array, int(quality))
        decoded, decoding = timed(codec.decode, data)
        row = measure(image.name, quality, len(data), from_uint8(decoded)[None], x)
        rows.append(row | time_row(encoding, decoding))
    return rows


def downscale_compact(image: NamedImage, ratio: int) -> np.ndarray:
    """The HxWx3 uint8 image the downscale baseline stores: replicate-pad, bicubic downscale, round."""
    padded = pad_to_multiple(_as_float(image), ratio)
    return to_uint8(quantize_8bit(bicubic_down(padded, ratio))[0])


@torch.no_grad()
def _downscale_rows(image: NamedImage, ratio: int, codec: Codec, qualities: Sequence[int]) -> list[Row]:
    x = _as_float(image)
    height, width = image.size
    padded_size = (height + (-height) % ratio, width + (-width) % ratio)
    compact, downscaling = timed(downscale_compact, image, ratio)
    rows = []
    for quality in qualities:
        data, encoding = timed(codec.encode, compact, int(quality))
        x_hat, decoding = timed(_upscaled, codec, data, padded_size, image.size)
        row = measure(image.name, quality, len(data), x_hat, x)
        rows.append(row | time_row(downscaling + encoding, decoding))
    return rows


def _upscaled(codec: Codec, data: bytes, padded: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """The downscale baseline's reconstruction of its file: decode, bicubic upscale, crop, round."""
    up = bicubic_up(from_uint8(codec.decode(data))[None], padded)
    return quantize_8bit(up[..., : size[0], : size[1]])


def _curve(name: str, per_image: list[list[Row]]) -> RDCurve:
    return curve_from_rows(name, [row for rows in per_image for row in rows])


def codec_curve(
    images: Sequence[NamedImage],
    codec: Codec | str,
    qualities: Sequence[int],
    name: str | None = None,
    threads: int = 0,
) -> RDCurve:
    """RD curve of a codec used directly on the images, one point per quality."""
    codec = resolve_codec(codec)
    jobs = [(image, codec, list(qualities)) for image in images]
    return _curve(name or codec.name, _map(_codec_rows, jobs, threads))


def downscale_curve(
    images: Sequence[NamedImage],
    ratio: int,
    codec: Codec | str,
    qualities: Sequence[int],
    name: str | None = None,
    threads: int = 0,
) -> RDCurve:
    """RD curve of: pad to a multiple of ``ratio``, bicubic downscale, codec, bicubic upscale, crop, round."""
    if ratio < 1:
        raise ValueError(f"ratio must be >= 1, got {ratio}")
    codec = resolve_codec(codec)
    jobs = [(image, ratio, codec, list(qualities)) for image in images]
    return _curve(name or f"down{ratio}-{codec.name}", _map(_downscale_rows, jobs, threads))


def _grid(qualities: Sequence[int] | Mapping[str, Sequence[int]] | None, kind: str) -> list[int]:
    if qualities is None:
        return list(DEFAULT_QUALITIES[kind])
    if isinstance(qualities, Mapping):
        return list(qualities[kind] if kind in qualities else DEFAULT_QUALITIES[kind])
    return list(qualities)


def run_baselines(
    images: Sequence[NamedImage],
    qualities: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
    ratios: Sequence[int] = (2,),
    codecs: Sequence[str] = BASELINE_CODECS,
    downscale_codecs: Sequence[str] = ("jpeg",),
    threads: int = 0,
    progress: bool = False,
) -> dict[str, RDCurve]:
    """Curves "jpeg", "mozjpeg", "webp", "avif", "jpegli", "jpegxl" (``codecs``) and "down{r}-{codec}"
    for each ratio x ``downscale_codecs``.

    ``qualities``: None for :data:`DEFAULT_QUALITIES`, one grid for every curve, or a mapping from curve kind
    ("jpeg", "down-jpeg", ...) to grid, missing kinds falling back to the defaults.
    """
    from tqdm import tqdm

    tasks = [
        (name, lambda n=name: codec_curve(images, n, _grid(qualities, n), threads=threads)) for name in codecs
    ]
    tasks += [
        (
            f"down{ratio}-{name}",
            lambda r=ratio, n=name: downscale_curve(
                images, r, n, _grid(qualities, f"down-{n}"), threads=threads
            ),
        )
        for ratio in ratios
        for name in downscale_codecs
    ]
    curves = {}
    for name, build in tqdm(tasks, desc="baselines", unit="curve", disable=not progress):
        curves[name] = build()
    return curves
