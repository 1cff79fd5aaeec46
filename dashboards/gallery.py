"""The report's image gallery as plain data: crops of the original, JPEG and shrink, with bytes and MS-SSIM.

For the best Pareto trial (highest dev gain over JPEG) a few dev images (a refine study: its held-out
``[test]`` images, which the trials never saw) are compressed with the trial's
checkpoint at its operating quality (a real file: its ``len()`` is the rate), and each is also stored as a
plain JPEG at the quality whose file size is nearest
(:func:`shrink.compression.gallery.compare_at_same_bytes`). Bytes and MS-SSIM are of the full
(dev-cropped) image; the crops only show a detail.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
from PIL import Image

from shrink.compression.bundle import load_model
from shrink.compression.codecs import Codec, build_codec
from shrink.compression.config import TrainConfig
from shrink.compression.data import NamedImage, load_images
from shrink.compression.gallery import compare_at_same_bytes
from shrink.compression.metrics import bpp
from shrink.compression.models import ShrinkModel
from shrink.compression.text import plain_text
from shrink.compression.trainer import load_dev_images
from shrink.search.records import CHECKPOINT_ATTR

from .study_info import TrialPoint, best_front_trial, resolve_checkpoint


@dataclass
class GalleryTile:
    label: str
    png: bytes  # the crop, as a PNG file
    nbytes: int | None = None  # the full image's file (None for the original)
    bpp: float | None = None
    msssim: float | None = None
    quality: int | None = None

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass
class GalleryRow:
    image: str
    size: tuple[int, int]
    tiles: list[GalleryTile]


@dataclass
class GalleryInfo:
    trial: int | None
    checkpoint: str | None
    quality: int | None
    crop: int
    rows: list[GalleryRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    images_from: str = "dev"  # "dev", or the test folder the images come from


def operating_quality(config: TrainConfig) -> int:
    """The codec quality a trial is judged at: its fixed quality, else the middle dev quality."""
    if config.codec.quality is not None:
        return int(config.codec.quality)
    qualities = sorted(config.data.dev_qualities)
    return int(qualities[len(qualities) // 2])


def get_gallery_info(
    study: optuna.Study,
    points: Sequence[TrialPoint],
    roots: Iterable[Path],
    n_images: int = 3,
    crop: int = 128,
    test: str | None = None,
) -> GalleryInfo:
    """Gallery rows for the first ``n_images`` dev images (or, given, ``test`` images) of the best Pareto
    trial, or a note why none."""
    best = best_front_trial(points)
    if best is None:
        return GalleryInfo(None, None, None, crop, notes=["no completed trial yet"])
    trial = {t.number: t for t in study.get_trials(deepcopy=False)}[best.number]
    stored = trial.user_attrs.get(CHECKPOINT_ATTR)
    path = resolve_checkpoint(stored, roots)
    if path is None:
        return GalleryInfo(
            best.number, stored, None, crop, notes=[f"checkpoint {plain_text(repr(stored))} not found"]
        )
    try:
        model, config = load_model(path)
        images = load_images(test, n_images) if test else load_dev_images(config.data)[:n_images]
    except (OSError, ValueError) as error:  # a foreign checkpoint, images not reachable from here
        return GalleryInfo(best.number, str(path), None, crop, notes=[f"no gallery: {error}"])
    quality = operating_quality(config)
    codec = build_codec(config.codec)
    rows = [gallery_row(model, codec, quality, image, crop, best.number) for image in images]
    return GalleryInfo(best.number, str(path), quality, crop, rows, images_from=test or "dev")


def gallery_row(
    model: ShrinkModel, codec: Codec, quality: int, image: NamedImage, crop: int, trial: int
) -> GalleryRow:
    """original | JPEG at the nearest file size | shrink, via :func:`compare_at_same_bytes`."""
    comparison = compare_at_same_bytes(model, image, codec, quality, crop)
    height, width = image.size

    def tile(key: str, label: str, quality_: int) -> GalleryTile:
        nbytes = comparison.bytes[key]
        return GalleryTile(
            label,
            png(comparison.crops[key]),
            nbytes,
            bpp(nbytes, height, width),
            comparison.msssim[key],
            quality_,
        )

    tiles = [
        GalleryTile("original", png(comparison.crops["original"])),
        tile("jpeg", f"JPEG q{comparison.jpeg_quality}", comparison.jpeg_quality),
        tile("shrink", f"shrink (trial {trial}, q{quality})", quality),
    ]
    return GalleryRow(image.name, image.size, tiles)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()
