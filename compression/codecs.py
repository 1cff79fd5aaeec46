"""Real image codecs behind one small interface: encode -> bytes, decode -> image.

JPEG, WebP and AVIF go through Pillow; mozjpeg (trellis quantisation, progressive scans: :mod:`.mozjpeg`) and
jpegli (Google's JPEG encoder, through ``pyjpegli``) write standard JPEG files, decoded by Pillow like any
JPEG; JPEG XL (libjxl, through ``imagecodecs``) is a reference codec for the baseline curves only
(:data:`REFERENCE_CODECS`), not a training codec.
The byte count used everywhere in shrink is ``len()`` of what :meth:`Codec.encode` returns: the real file.
Batches round-trip in a thread pool; Pillow, mozjpeg (ctypes), pyjpegli and imagecodecs release the GIL while
they work.
"""

from __future__ import annotations

import io
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyjpegli
import torch
from PIL import Image

from . import mozjpeg
from .config import CodecConfig, ConfigError
from .qtables import BASELINE_MAX, EXTENDED_MAX, BaseTables, scaled_tables


class Codec(ABC):
    """A lossy image codec with an integer quality knob (higher = more bytes)."""

    name: str = ""
    pillow_format: str = ""
    extension: str = ""
    # What the differentiable JPEG proxy quantises with when it stands in for this codec (jpegli's adaptive
    # tables, WebP and AVIF have none of their own to offer it): a set of :mod:`.qtables` (or explicit base
    # tables) and its clamp.
    tables: str | BaseTables = "annex-k"
    max_quantizer = BASELINE_MAX

    @abstractmethod
    def save_options(self, quality: int) -> dict: ...

    def check_image(self, image: np.ndarray) -> None:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{self.name}: expected HxWx3 uint8, got {image.dtype} {image.shape}")

    def encode(self, image: np.ndarray, quality: int) -> bytes:
        """Encode an HxWx3 uint8 array into the bytes of a real file."""
        self.check_image(image)
        buffer = io.BytesIO()
        Image.fromarray(image, "RGB").save(buffer, format=self.pillow_format, **self.save_options(quality))
        return buffer.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))

    def round_trip(self, image: np.ndarray, quality: int) -> tuple[np.ndarray, int]:
        data = self.encode(image, quality)
        return self.decode(data), len(data)


@dataclass
class JpegCodec(Codec):
    """Pillow's libjpeg(-turbo). ``tables`` other than Annex K (libjpeg's own: a named set or explicit base
    tables) are scaled by quality here, as libjpeg would scale them (8-bit entries, baseline files), and
    handed to Pillow as ``qtables``."""

    subsampling: str = "4:2:0"
    optimize: bool = True
    tables: str | BaseTables = "annex-k"
    name = "jpeg"
    pillow_format = "JPEG"
    extension = ".jpg"
    max_quantizer = BASELINE_MAX

    def save_options(self, quality: int) -> dict:
        options = {"subsampling": self.subsampling, "optimize": self.optimize}
        if self.tables == "annex-k":
            return options | {"quality": int(quality)}
        # no "quality" beside qtables: Pillow would pass it to libjpeg as a second scale factor
        luma, chroma = scaled_tables(self.tables, quality, self.max_quantizer)
        return options | {"qtables": [luma.ravel().tolist(), chroma.ravel().tolist()]}


@dataclass
class MozjpegCodec(Codec):
    """mozjpeg 4.0.3 (:mod:`.mozjpeg`): trellis quantisation, progressive scans, its default table set
    (``imagemagick``), another named one or explicit base tables, 16-bit table entries at low qualities as
    cjpeg writes them. Standard JPEG files, decoded by Pillow like :class:`JpegCodec`."""

    subsampling: str = "4:2:0"
    tables: str | BaseTables = "imagemagick"
    name = "mozjpeg"
    pillow_format = "JPEG"
    extension = ".jpg"
    max_quantizer = EXTENDED_MAX

    def save_options(self, quality: int) -> dict:
        return {"quality": int(quality), "subsampling": self.subsampling, "tables": self.tables}

    def encode(self, image: np.ndarray, quality: int) -> bytes:
        self.check_image(image)
        return mozjpeg.encode(image, int(quality), self.subsampling, self.tables)


@dataclass
class WebPCodec(Codec):
    method: int = 4
    name = "webp"
    pillow_format = "WEBP"
    extension = ".webp"

    def save_options(self, quality: int) -> dict:
        return {"quality": int(quality), "method": self.method}


@dataclass
class AvifCodec(Codec):
    subsampling: str = "4:2:0"
    speed: int = 6
    name = "avif"
    pillow_format = "AVIF"
    extension = ".avif"

    def save_options(self, quality: int) -> dict:
        return {"quality": int(quality), "subsampling": self.subsampling, "speed": self.speed}


@dataclass
class JpegliCodec(Codec):
    """jpegli (``pyjpegli.encode(rgb, width, height, quality)``): a standard baseline JPEG, always 4:2:0.

    pyjpegli offers no subsampling, progressive or distance control; ``CodecConfig`` refuses
    ``codec.subsampling`` other than 4:2:0 with this codec. Decoded by Pillow (libjpeg-turbo) like
    :class:`JpegCodec`, as ``shrink decompress`` and any viewer decode it.
    """

    name = "jpegli"
    pillow_format = "JPEG"
    extension = ".jpg"
    subsampling = "4:2:0"

    def save_options(self, quality: int) -> dict:
        return {"quality": int(quality)}

    def encode(self, image: np.ndarray, quality: int) -> bytes:
        self.check_image(image)
        height, width = image.shape[:2]
        return pyjpegli.encode(np.ascontiguousarray(image), width, height, int(quality))


def jpegxl_distance(quality: float) -> float:
    """libjxl's ``JxlEncoderDistanceFromQuality`` (``cjxl --quality``): q90 -> distance 1.0, q30 -> 6.4.

    Linear above q30 (0.1 + 0.09 (100 - q)), a quadratic ramp below it (q5 -> 19.7); the baseline grid
    q5..95 is thus distance 19.7..0.55.
    """
    if quality >= 100:
        return 0.0
    if quality >= 30:
        return 0.1 + (100 - quality) * 0.09
    return 53.0 / 3000.0 * quality * quality - 23.0 / 20.0 * quality + 25.0


@dataclass
class JpegXLCodec(Codec):
    """JPEG XL (libjxl through ``imagecodecs.jpegxl_encode``) at the distance cjxl gives a quality.

    A reference codec for the baselines, not a training codec. ``effort`` 7 is libjxl's (and cjxl's)
    default; imagecodecs' own default is lower. One libjxl thread per file: files run in parallel instead.
    """

    effort: int = 7
    name = "jpegxl"
    extension = ".jxl"

    def save_options(self, quality: int) -> dict:
        return {"distance": jpegxl_distance(int(quality)), "effort": self.effort}

    def encode(self, image: np.ndarray, quality: int) -> bytes:
        self.check_image(image)
        options = self.save_options(quality)
        import imagecodecs  # here, not at the top: a 26 MB wheel that only this reference codec needs

        return bytes(imagecodecs.jpegxl_encode(np.ascontiguousarray(image), numthreads=1, **options))

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        return np.asarray(imagecodecs.jpegxl_decode(data, numthreads=1))


CODECS: dict[str, Callable[[CodecConfig], Codec]] = {
    "jpeg": lambda c: JpegCodec(c.subsampling, c.optimize, c.table_choice("annex-k")),
    "mozjpeg": lambda c: MozjpegCodec(c.subsampling, c.table_choice("imagemagick")),
    "jpegli": lambda c: JpegliCodec(),
    "webp": lambda c: WebPCodec(method=c.webp_method),
    "avif": lambda c: AvifCodec(subsampling=c.subsampling, speed=c.avif_speed),
}

# Codecs for the baseline curves only (``shrink baselines --codecs``), by name, at their baseline settings.
REFERENCE_CODECS: dict[str, Callable[[], Codec]] = {"jpegxl": JpegXLCodec}


def build_codec(config: CodecConfig) -> Codec:
    """The training codec of ``config``; a one-line :class:`ConfigError` for a name not in :data:`CODECS`."""
    if config.name not in CODECS:
        raise ConfigError(f"codec.name = {config.name!r} is not a codec; choose one of {', '.join(CODECS)}")
    return CODECS[config.name](config)


CODEC_THREADS_ENV = "SHRINK_CODEC_THREADS"


def default_codec_threads(environ: Mapping[str, str] | None = None) -> int:
    """Codec threads when ``codec.threads`` is 0: ``SHRINK_CODEC_THREADS`` (``shrink launch`` sets it to each
    worker's share of the cores), else the cores this process may run on (its affinity mask)."""
    value = (os.environ if environ is None else environ).get(CODEC_THREADS_ENV, "").strip()
    if value:
        if not (value.isascii() and value.isdigit() and int(value) > 0):
            raise ValueError(f"{CODEC_THREADS_ENV}={value!r} is not a positive integer")
        return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """CxHxW float in [0, 1] -> HxWxC uint8, rounding exactly like :func:`resample.quantize_8bit`."""
    array = torch.round(image.detach().float().clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    return array.permute(1, 2, 0).cpu().numpy()


def from_uint8(array: np.ndarray) -> torch.Tensor:
    """HxWxC uint8 -> CxHxW float32 in [0, 1]."""
    return torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1).float() / 255.0


def batch_to_uint8(batch: torch.Tensor) -> torch.Tensor:
    """Bx3xHxW float in [0, 1] -> BxHxWx3 uint8 on the same device, rounded as :func:`to_uint8` rounds: the
    batch then crosses to the host once, as a quarter of the bytes."""
    return torch.round(batch.detach().float().clamp(0.0, 1.0) * 255.0).to(torch.uint8).permute(0, 2, 3, 1)


def batch_from_uint8(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """BxHxWx3 uint8 (host) -> Bx3xHxW float32 in [0, 1] on ``device``, converted there: pinned and copied
    without blocking when ``device`` is a GPU."""
    if device.type == "cuda":
        images = images.pin_memory().to(device, non_blocking=True)
    else:
        images = images.to(device)
    return images.permute(0, 3, 1, 2).float() / 255.0


class RoundTripJob:
    """A batch's round trip under way in the pool: :meth:`result` waits for it."""

    def __init__(self, futures: list[Future]):
        self.futures = futures

    def done(self) -> bool:
        return all(future.done() for future in self.futures)

    def result(self) -> tuple[np.ndarray, list[int]]:
        """(the decoded batch as BxHxWx3 uint8, the file sizes in bytes)."""
        results = [future.result() for future in self.futures]
        return np.stack([decoded for decoded, _ in results]), [size for _, size in results]


class BatchRoundTrip:
    """Encode and decode every image of a batch with a real codec, in parallel threads."""

    def __init__(self, codec: Codec, threads: int = 0):
        self.codec = codec
        self.pool = ThreadPoolExecutor(max_workers=threads or default_codec_threads())

    def submit(self, images: np.ndarray, qualities: Sequence[int]) -> RoundTripJob:
        """Start round-tripping a BxHxWx3 uint8 batch (a file per image, at its quality); returns at once."""
        if len(qualities) != images.shape[0]:
            raise ValueError(f"{len(qualities)} qualities for a batch of {images.shape[0]}")
        jobs = zip(images, qualities, strict=True)
        return RoundTripJob([self.pool.submit(self.codec.round_trip, image, int(q)) for image, q in jobs])

    def __call__(self, batch: torch.Tensor, qualities: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
        """Round-trip a Bx3xHxW batch in [0, 1]; returns the decoded batch (same device) and file sizes."""
        decoded, sizes = self.submit(batch_to_uint8(batch).cpu().numpy(), qualities).result()
        return batch_from_uint8(torch.from_numpy(decoded), batch.device).to(batch.dtype), sizes

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def __enter__(self) -> BatchRoundTrip:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
