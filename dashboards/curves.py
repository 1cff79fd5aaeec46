"""Reference RD curves for a report: baselines and exported bundles on an image set, cached (see cache.py).

On the study's dev images the JPEG curve is the one cached in the study (``DEV_JPEG_ATTR``, the anchor every
trial's gain was measured against); downscale x2 + JPEG + bicubic, WebP and AVIF are measured here with the
project's codec defaults. On another image set (``--data``) all four are measured, or read from a
``shrink baselines`` JSON. Bundles are evaluated with :func:`shrink.compression.evaluate.evaluate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import optuna

from shrink.compression.baselines import DEFAULT_QUALITIES, codec_curve, downscale_curve, resolve_codec
from shrink.compression.bundle import bundle_sha256, is_bundle, load_bundle
from shrink.compression.codecs import build_codec
from shrink.compression.data import NamedImage
from shrink.compression.evaluate import evaluate
from shrink.compression.rd import RDCurve
from shrink.compression.trainer import dev_jpeg_curve
from shrink.search.records import DEV_JPEG_ATTR, read_curve

from .cache import CurveCache, cache_key, images_fingerprint

DOWNSCALE_RATIO = 2
# JPEG itself comes from the study; jpegli and JPEG XL are the reference curves of `shrink baselines`
DEV_BASELINES = (f"down{DOWNSCALE_RATIO}-jpeg", "mozjpeg", "webp", "avif", "jpegli", "jpegxl")
ALL_BASELINES = ("jpeg", *DEV_BASELINES)


def grid_for(name: str, qualities: Sequence[int] | None) -> list[int]:
    """The quality grid of a baseline (``down2-jpeg`` -> kind ``down-jpeg``) unless one is given."""
    if qualities is not None:
        return [int(q) for q in qualities]
    kind = "down-" + name.split("-", 1)[1] if name.startswith("down") else name
    return list(DEFAULT_QUALITIES[kind])


def measure_baseline(name: str, images: Sequence[NamedImage], grid: Sequence[int]) -> RDCurve:
    """One baseline curve by name: ``jpeg`` / ``webp`` / ``avif`` / ``jpegli`` / ``jpegxl`` or
    ``down{r}-{codec}``."""
    if name.startswith("down"):
        ratio, codec = name[4:].split("-", 1)
        return downscale_curve(images, int(ratio), codec, grid, name=name)
    return codec_curve(images, name, grid, name=name)


def _codec_settings(name: str) -> str:
    return repr(resolve_codec(name.split("-", 1)[-1]))


def baseline_curves(
    images: Sequence[NamedImage],
    names: Sequence[str],
    cache: CurveCache,
    qualities: Sequence[int] | None = None,
) -> dict[str, RDCurve]:
    """``{name: curve}`` for each baseline, from ``cache`` when the same images and grid were measured."""
    fingerprint = images_fingerprint(images)
    keys = [
        (name, cache_key("baseline", name, fingerprint, grid_for(name, qualities), _codec_settings(name)))
        for name in names
    ]
    return cache.many(keys, lambda name: measure_baseline(name, images, grid_for(name, qualities)))


def study_dev_jpeg(study: optuna.Study, images: Sequence[NamedImage], cache: CurveCache) -> RDCurve:
    """The dev JPEG curve stored with the study; measured (and cached here, not stored) if it is absent."""
    curve = read_curve(study, DEV_JPEG_ATTR)
    if curve is None:
        key = cache_key("dev-jpeg", images_fingerprint(images))
        curve = cache.get_or_compute(key, lambda: dev_jpeg_curve(list(images)))
    return RDCurve("jpeg", curve.points, curve.per_image)


def dev_baselines(
    study: optuna.Study,
    images: Sequence[NamedImage],
    cache: CurveCache,
    qualities: Sequence[int] | None = None,
) -> dict[str, RDCurve]:
    """JPEG (the study's own anchor), downscale x2 + JPEG, WebP and AVIF on the study's dev images."""
    return {
        "jpeg": study_dev_jpeg(study, images, cache),
        **baseline_curves(images, DEV_BASELINES, cache, qualities),
    }


def find_bundles(folder: str | Path | None) -> list[Path]:
    """Bundle directories in ``folder`` (itself, if it is one), by name; none for None."""
    if folder is None:
        return []
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"bundle folder not found: {folder}")
    if is_bundle(folder):
        return [folder]
    return sorted(path for path in folder.iterdir() if is_bundle(path))


def bundle_curves(
    bundles: Sequence[Path],
    images: Sequence[NamedImage],
    cache: CurveCache,
    qualities: Sequence[int] | None = None,
) -> dict[str, RDCurve]:
    """Each bundle evaluated on ``images`` (full images, real files) over the quality grid, by folder name."""
    fingerprint = images_fingerprint(images)
    curves = {}
    for path in bundles:
        key = cache_key("bundle", bundle_sha256(path), fingerprint, qualities or DEFAULT_QUALITIES)
        curves[path.name] = cache.get_or_compute(key, lambda p=path: evaluate_bundle(p, images, qualities))
    return curves


def evaluate_bundle(path: Path, images: Sequence[NamedImage], qualities: Sequence[int] | None) -> RDCurve:
    model, config, _ = load_bundle(path)
    grid = grid_for(f"down{config.model.ratio}-{config.codec.name}", qualities)
    return evaluate(model, images, grid, build_codec(config.codec), name=path.name)
