"""Honest evaluation: full images, batch size 1, real files, 8-bit outputs.

Each image is padded to a multiple of the ratio, compressed by the ComCNN, stored as a real file by the codec
(:func:`api.compact_bytes`: a shrink file without its header; its ``len()`` is the rate), decoded, upscaled,
corrected by the RecCNN, cropped back and rounded to 8 bits as a decompressed PNG would be. bpp is over the
original W x H. Each per-image row also times its file's encode (ComCNN and codec) and decode (codec, bicubic
and RecCNN), batch size 1, as ``shrink compress``/``decompress`` run them: the curve's
:attr:`~.rd.RDCurve.times`, which ``shrink eval --compressai-json`` writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import zoo
from .api import RateError, compact_bytes, decompress_image
from .baselines import DEFAULT_QUALITIES, codec_curve
from .bundle import bundle_sha256, check_directory_target, is_bundle, load_model
from .choose import choose, open_candidates
from .codecs import Codec, JpegCodec, build_codec, from_uint8
from .config import TrainConfig
from .data import NamedImage, load_images
from .family import Family, check_member_names, load_family, save_family
from .models import ShrinkModel
from .rd import (
    TIME_KEYS,
    RDCurve,
    curve_from_rows,
    measure,
    point_from_rows,
    point_times,
    time_row,
    timed,
)
from .resample import quantize_8bit


@torch.no_grad()
def reconstruct_bytes(
    model: ShrinkModel, data: bytes, codec: Codec, size: tuple[int, int], quality: int | None = None
) -> torch.Tensor:
    """File bytes -> 1x3xHxW reconstruction in [0, 1], rounded to 8 bits (``quality``: the file's, for a
    quality-conditioned RecCNN)."""
    device = next(model.parameters()).device
    decoded = from_uint8(codec.decode(data))[None].to(device)
    height, width = size
    padded = (height + (-height) % model.ratio, width + (-width) % model.ratio)
    x_hat = model.reconstruct(decoded, padded, quality)["x_hat"][..., :height, :width]
    return quantize_8bit(x_hat.float())


@torch.no_grad()
def evaluate_image(model: ShrinkModel, image: NamedImage, codec: Codec, quality: int) -> dict:
    """The :func:`.rd.measure` row of one image at ``quality``, with its encoding and decoding seconds."""
    device = next(model.parameters()).device
    x = (image.pixels.float() / 255.0)[None].to(device)
    data, encoding = timed(compact_bytes, model, image.pixels, codec, quality, 0)  # the whole image at once
    x_hat, decoding = timed(_finished_reconstruction, model, data, codec, image.size, quality)
    return measure(image.name, quality, len(data), x_hat, x) | time_row(encoding, decoding)


def _finished_reconstruction(
    model: ShrinkModel, data: bytes, codec: Codec, size: tuple[int, int], quality: int
) -> torch.Tensor:
    """:func:`reconstruct_bytes`, returning once the device has finished it (so a timer around it is true)."""
    x_hat = reconstruct_bytes(model, data, codec, size, quality)
    if x_hat.is_cuda:
        torch.cuda.synchronize(x_hat.device)
    return x_hat


def evaluate(
    model: ShrinkModel,
    images: Sequence[NamedImage],
    qualities: Iterable[int],
    codec: Codec,
    name: str = "shrink",
    progress: bool = False,
) -> RDCurve:
    """Per-image and mean bpp, MS-SSIM, MS-SSIM dB and PSNR at each quality."""
    was_training = model.training
    model.eval()
    qualities = list(qualities)
    jobs = [(quality, image) for image in images for quality in qualities]
    if progress:
        from tqdm import tqdm

        jobs = tqdm(jobs, desc=f"eval {name}", unit="img")
    rows = [evaluate_image(model, image, codec, quality) for quality, image in jobs]
    model.train(was_training)
    return curve_from_rows(name, rows)


@dataclass(frozen=True)
class FileEvaluation:
    """A checkpoint or bundle evaluated on an image folder, beside JPEG on the same images."""

    curve: RDCurve
    jpeg: RDCurve  # at the JPEG baseline's qualities
    config: TrainConfig
    meta: dict[str, str]  # what was evaluated on what: checkpoint, data (and a bundle's bundle_sha256)

    @property
    def description(self) -> str:
        """A CompressAI results file's description of the curve: what was evaluated, how it was timed."""
        what = ", ".join(f"{key} {value}" for key, value in self.meta.items())
        codec = self.config.codec.name
        return (
            f"shrink eval: {what}. encoding_time, decoding_time: mean wall-clock seconds per image (batch 1, "
            f"CPU) of the encode (ComCNN + {codec}) and of the decode ({codec} + bicubic upscale + RecCNN)"
        )


def evaluate_file(
    path: str | Path, data: str | Path, qualities: Iterable[int], name: str = "shrink", progress: bool = False
) -> FileEvaluation:
    """``shrink eval``: the RD curve of the checkpoint or bundle at ``path`` (or ``zoo:NAME``) on the images
    in ``data``."""
    model_path = zoo.resolve(path)
    model, config = load_model(model_path)
    meta = {"checkpoint": str(path), "data": str(data)}
    if is_bundle(model_path):  # tag the curve with the identity of what was evaluated
        meta["bundle_sha256"] = bundle_sha256(model_path)
    images = load_images(data)
    curve = evaluate(model, images, qualities, build_codec(config.codec), name=name, progress=progress)
    jpeg = codec_curve(images, JpegCodec(), DEFAULT_QUALITIES["jpeg"])
    return FileEvaluation(curve, jpeg, config, meta)


# ---- a family, as its encoder's per-image choice gives it ------------------------------------------------


def choice_targets(family: Family, count: int = 10) -> list[float]:
    """``count`` target rates, geometric, from 1.2x the lowest point of the members' test curves (the
    lowest member's q1 reaches it only on the average image) to their highest point."""
    rates = [point.bpp for member in family.members for point in member.curve.points]
    low, high = 1.2 * min(rates), max(rates)
    if count < 2 or high <= low:
        return [round(high, 4)]
    return [round(float(rate), 4) for rate in np.geomspace(low, high, count)]


@torch.no_grad()
def evaluate_choice(
    path: str | Path,
    images: Sequence[NamedImage],
    targets: Iterable[float],
    effort: int,
    name: str = "shrink",
    progress: bool = False,
) -> tuple[RDCurve, list[float]]:
    """The curve a user of ``shrink compress --model FAMILY --bpp T --effort N`` gets: at each target T, every
    image compressed by :func:`choose.choose` (timed: the encoder's whole search) and decompressed as
    ``shrink decompress`` does (timed), one point per target (quality None: the file's own vary by image).
    Targets some image cannot meet are left out and returned second."""
    rows, missed = [], []
    for target in targets:
        tried = open_candidates(path, target, None, effort)
        bundles = dict(tried)
        try:
            rows += [
                _chosen_row(image, tried, bundles, target) for image in _progress(images, target, progress)
            ]
        except RateError:
            missed.append(target)
    by_target: dict[float, list[dict]] = {}
    for row in rows:
        by_target.setdefault(row["target_bpp"], []).append(row)
    points = [point_from_rows(group, None) for group in by_target.values()]
    times = [point_times(group) for group in by_target.values()]
    per_image = [{key: value for key, value in row.items() if key not in TIME_KEYS} for row in rows]
    return RDCurve(name, points, per_image, None if None in times else times), missed


def _progress(images: Sequence[NamedImage], target: float, progress: bool) -> Iterable[NamedImage]:
    if not progress:
        return images
    from tqdm import tqdm

    return tqdm(images, desc=f"choice at {target:g} bpp", unit="img")


def _chosen_row(image: NamedImage, tried, bundles: dict, target: float) -> dict:
    choice, encoding = timed(lambda: choose(image.pixels, tried, bpp=target))
    decoded, decoding = timed(lambda: decompress_image(choice.data, bundles[choice.model]))
    x_hat = torch.from_numpy(decoded).permute(2, 0, 1)[None].float() / 255.0
    x = image.pixels[None].float() / 255.0
    row = measure(image.name, choice.quality, len(choice.data), x_hat, x)
    return (
        row
        | {"target_bpp": target, "member": choice.model, "decoded": choice.decoded}
        | time_row(encoding, decoding)
    )


def family_of_bundles(
    out_dir: str | Path,
    bundles: Sequence[str | Path],
    test: str | Path,
    qualities: Iterable[int],
    overwrite: bool = False,
    progress: bool = False,
) -> Family:
    """One codec family of existing bundles (or ``zoo:NAME``), each member's curve measured on ``test`` (name:
    the zoo name or the bundle folder's). Every bundle (files, sha256, weights, codec), every member name and
    ``out_dir`` are checked before any bundle is measured."""
    named = member_bundles(bundles)
    check_member_names(list(named), out_dir)
    check_directory_target(out_dir, overwrite)
    opened = {name: opened_member(path) for name, path in named.items()}
    images, qualities = load_images(test), list(qualities)
    members = [
        (name, named[name], evaluate(model, images, qualities, codec, name, progress))
        for name, (model, codec) in opened.items()
    ]
    save_family(out_dir, members, test=str(test), overwrite=overwrite)
    return load_family(out_dir)


def member_bundles(bundles: Sequence[str | Path]) -> dict[str, Path]:
    """{member name: bundle folder} of ``bundles`` (or ``zoo:NAME``); two members of one name are refused."""
    named = {}
    for given in bundles:
        path = zoo.resolve(given)
        if not is_bundle(path):
            raise ValueError(f"{given}: not a shrink bundle (shrink export --checkpoint makes one)")
        name = str(given)[len(zoo.PREFIX) :] if zoo.is_zoo_name(given) else path.name
        if name in named:
            raise ValueError(f"two members would be named {name!r}: rename a bundle folder")
        named[name] = path
    return named


def opened_member(path: Path) -> tuple[ShrinkModel, Codec]:
    """The bundle's model (its files verified) and codec."""
    model, config = load_model(path)
    return model, build_codec(config.codec)
