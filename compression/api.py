"""The shrink codec as a library: an image in, a shrink file's bytes out, and back.

As in CompressAI, the model owns compress/decompress and every tool calls them: ``shrink compress`` and
``shrink decompress`` are :func:`compress_image` and :func:`decompress_image` over files, and evaluation
(``shrink eval``, training's dev curves, study trials) counts the rate of :func:`compact_bytes`, the one
function that turns an image into codec bytes (a shrink file is those bytes with its header,
:mod:`container`).

>>> bundle = open_bundle("bundles/trial-00007")
>>> data = compress_image(PIL.Image.open("photo.png"), bundle, bpp=0.3)
>>> pixels = decompress_image(data, bundle)  # HxWx3 uint8

``bundle`` may also be a path: a bundle directory, ``zoo:NAME`` (a model shipped in the package), or a
codec family (``shrink export --family``) whose member for ``bpp`` compresses and whose member named in
the file's header decompresses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import zoo
from .bundle import checkpoint_as_bundle, load_bundle
from .codecs import Codec, build_codec, from_uint8, to_uint8
from .config import TrainConfig
from .container import (
    MAX_FILE_BYTES,
    ContainerError,
    Header,
    check_pixels,
    decode_compact,
    encode,
    highest_quality_within,
    read_header,
)
from .family import is_family, load_family
from .files import read_regular
from .metrics import MS_SSIM_WEIGHTS, ms_ssim, ms_ssim_levels, psnr
from .models import ShrinkModel
from .tiling import DEFAULT_TILE, compact_image, reconstruct_uint8, tilings

# Codecs whose files are standard JPEGs, so they carry the SHRINK segment and decode with Pillow.
JPEG_CODECS = ("jpeg", "mozjpeg", "jpegli")
MAX_BPP = 64.0  # raw RGB is 24 bpp; the rest is room for a small image's headers

ImageLike = torch.Tensor | np.ndarray | Image.Image


class RateError(ValueError):
    """A target bpp that even quality 1 does not meet."""


def check_bpp(bpp: float) -> None:
    """Refuse a target bpp that is not a finite number in (0, :data:`MAX_BPP`] (1e308 would overflow)."""
    if not (math.isfinite(bpp) and 0 < bpp <= MAX_BPP):
        raise ValueError(f"a target bpp lies in (0, {MAX_BPP:g}], got {bpp}")


@dataclass(frozen=True)
class OpenBundle:
    """A verified export bundle, loaded: its model (eval mode), training config and sha256 identity."""

    path: Path
    model: ShrinkModel
    config: TrainConfig
    sha256: str

    def jpeg_codec(self) -> Codec:
        """The bundle's codec: JPEG (Pillow), mozjpeg or jpegli; a WebP/AVIF bundle is refused (no JPEG)."""
        if self.config.codec.name not in JPEG_CODECS:
            raise ValueError(
                f"the bundle's codec is {self.config.codec.name}; shrink compress writes JPEG files"
            )
        return build_codec(self.config.codec)

    @property
    def default_quality(self) -> int:
        """The bundle's ``codec.quality``, else the middle of its training ``quality_range``."""
        if self.config.codec.quality is not None:
            return self.config.codec.quality
        low, high = self.config.codec.quality_range
        return (low + high) // 2


def open_bundle(path: str | Path, device: str | torch.device = "cpu") -> OpenBundle:
    """A bundle folder, or a training checkpoint (RUN/best.ckpt) with the identity of the bundle that
    ``shrink export --checkpoint`` makes of it, or ``zoo:NAME`` (shipped in the package: :mod:`zoo`)."""
    path = zoo.resolve(path)
    if path.is_file():
        model, config, sha256 = checkpoint_as_bundle(path, device)
        return OpenBundle(Path(path), model, config, sha256)
    model, config, manifest = load_bundle(path, device)
    return OpenBundle(Path(path), model, config, manifest["sha256"])


# ---------------------------------------------------------------- compress


def as_pixels(image: ImageLike) -> torch.Tensor:
    """uint8 3xHxW (as :func:`container.read_photo` reads files) from itself, an HxWx3 uint8 array or a PIL
    image (converted to RGB)."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"an image array must be HxWx3 uint8, got {image.dtype} {image.shape}")
        return torch.from_numpy(image.copy()).permute(2, 0, 1).contiguous()
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"an image tensor must be 3xHxW uint8, got {image.dtype} {tuple(image.shape)}")
    return image


def compact_pixels(model: ShrinkModel, pixels: torch.Tensor, tile: int = DEFAULT_TILE) -> np.ndarray:
    """The ComCNN's compact image of uint8 3xHxW ``pixels`` as HxWx3 uint8, what the codec stores (``tile``:
    original pixels per tile side, 0 = the whole image at once)."""
    return to_uint8(compact_image(model, pixels, tilings(model, tile)[0])[0])


def compact_bytes(
    model: ShrinkModel, pixels: torch.Tensor, codec: Codec, quality: int, tile: int = DEFAULT_TILE
) -> bytes:
    """The codec's file of the compact image: its ``len()`` is the rate evaluation counts; a shrink file is
    the same bytes with its header (:func:`container.encode`)."""
    return codec.encode(compact_pixels(model, pixels, tile), quality)


def bundle_for_rate(path: str | Path, bpp: float | None) -> tuple[str, list[str]]:
    """(the bundle to compress with, notes): ``path`` itself, or the member of the family ``path`` whose test
    curve is highest at ``bpp`` (:meth:`Family.member_at`), with a note naming it."""
    if not is_family(path):
        return str(path), []
    if bpp is None:
        raise ValueError(f"{path} is a codec family: give a target bpp (the member depends on it)")
    family = load_family(path)
    member = family.member_at(bpp)
    return str(family.bundle_path(member)), [f"family member {member.name} for {bpp} bpp"]


def compress_image(
    image: ImageLike,
    bundle: OpenBundle | str | Path,
    *,
    quality: int | None = None,
    bpp: float | None = None,
    tile: int = DEFAULT_TILE,
) -> bytes:
    """The shrink file of ``image`` at ``quality`` (default: the bundle's) or at the highest quality whose
    file (all bytes) fits ``bpp`` bits per pixel; ``bundle``: an open bundle, or a bundle or family path."""
    if quality is not None and bpp is not None:
        raise ValueError("give quality or bpp, not both")
    if bpp is not None:
        check_bpp(bpp)
    if not isinstance(bundle, OpenBundle):
        bundle = open_bundle(bundle_for_rate(bundle, bpp)[0])
    pixels = as_pixels(image)
    file_at = file_writer(bundle, pixels, compact_pixels(bundle.model, pixels, tile))
    if bpp is None:
        data = file_at(quality or bundle.default_quality)
    else:
        data = file_within(file_at, bpp, pixels)[1]
    decode_compact(data, read_header(data))  # Pillow opens what we wrote, at the size the header implies
    return data


def file_writer(bundle: OpenBundle, pixels: torch.Tensor, compact: np.ndarray) -> Callable[[int], bytes]:
    """quality -> the shrink file of the HxWx3 uint8 ``compact`` image of ``pixels`` (size in the header)."""
    height, width = int(pixels.shape[-2]), int(pixels.shape[-1])
    codec, ratio = bundle.jpeg_codec(), bundle.model.ratio

    def file_at(quality: int) -> bytes:
        header = Header(width=width, height=height, ratio=ratio, quality=quality, bundle=bundle.sha256)
        return encode(compact, codec, header)

    return file_at


def file_within(file_at: Callable[[int], bytes], bpp: float, pixels: torch.Tensor) -> tuple[int, bytes]:
    """(quality, file) of the highest quality whose file fits ``bpp``; :class:`RateError` when none does."""
    height, width = int(pixels.shape[-2]), int(pixels.shape[-1])
    budget = math.floor(bpp * width * height / 8)
    try:
        return highest_quality_within(budget, file_at)
    except ValueError as error:
        message = f"bpp {bpp} ({budget} bytes at {width}x{height}) cannot be met: {error}"
        raise RateError(message) from None


# ---------------------------------------------------------------- decompress


def read_shrink_file(path: str | Path) -> tuple[bytes, Header]:
    """(bytes, header) of the shrink file at ``path``; a foreign, truncated or altered file, or a header whose
    size is over Pillow's pixel limit, is refused in one line naming ``path``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is not a file")
    data = read_regular(path, MAX_FILE_BYTES, "shrink file", follow_links=True)
    return data, checked_header(data, str(path))


def checked_header(data: bytes, source: str) -> Header:
    try:
        header = read_header(data)
    except ContainerError as error:
        raise ContainerError(f"{source}: {error}") from None
    check_pixels(header.width, header.height, f"{source} (original size in its header)")
    return header


def bundle_for_file(source: str, header: Header, path: str | Path) -> str:
    """``path`` itself, or the member of the family ``path`` whose bundle the file's header names."""
    if not is_family(path):
        return str(path)
    family = load_family(path)
    member = family.member(header.bundle)
    if member is None:
        raise ValueError(
            f"{source} was made with bundle sha256 {header.bundle[:16]}..., which is not a member of the "
            f"family {path}; decompress it with the family or bundle that compressed it"
        )
    return str(family.bundle_path(member))


def check_bundle(source: str, header: Header, bundle: OpenBundle, name: str) -> None:
    """The bundle must be the file's, and its model's ratio the header's (a header rewritten with a new
    CRC would otherwise upscale a compact image by the wrong ratio)."""
    if bundle.sha256 != header.bundle:
        raise ValueError(
            f"bundle hash mismatch: {source} was made with bundle sha256 {header.bundle[:16]}..., "
            f"but {name} is {bundle.sha256[:16]}...; decompress it with the bundle that compressed it"
        )
    if bundle.model.ratio != header.ratio:
        raise ContainerError(
            f"{source}: its header says ratio {header.ratio}, its bundle's model has {bundle.model.ratio} "
            "(altered header)"
        )


def decompress_image(
    data: bytes,
    bundle_or_family: OpenBundle | str | Path,
    *,
    tile: int = DEFAULT_TILE,
    device: str | torch.device = "cpu",
    source: str = "shrink file",
    fast: bool = True,
) -> np.ndarray:
    """The HxWx3 uint8 reconstruction of the shrink file ``data``, checked against its bundle before any pixel
    is computed (``source`` names the file in errors; ``device``: where a bundle given by path runs).

    ``fast``: on the CPU the RecCNN runs as :mod:`inference` prepares it (fused oneDNN convolutions,
    channels last), every pixel within one 8-bit level of the plain forward's; False runs the plain forward.
    """
    header = checked_header(data, source)
    if isinstance(bundle_or_family, OpenBundle):
        bundle, name = bundle_or_family, str(bundle_or_family.path)
    else:
        bundle = open_bundle(bundle_for_file(source, header, bundle_or_family), device)
        name = str(bundle_or_family)
    check_bundle(source, header, bundle, name)
    try:
        decoded = from_uint8(decode_compact(data, header))[None]
    except ContainerError as error:
        raise ContainerError(f"{source}: {error}") from None
    size, tiling = (header.height, header.width), tilings(bundle.model, tile)[1]
    return reconstruct_uint8(bundle.model, decoded, size, tiling, header.quality, fast=fast)


def reconstruction_quality(x_hat: np.ndarray, reference: torch.Tensor) -> tuple[float, float | None]:
    """(PSNR, MS-SSIM) of an HxWx3 uint8 reconstruction against the uint8 3xHxW original, as evaluation
    measures them; MS-SSIM is None unless both sides exceed 160 px."""
    y = torch.from_numpy(x_hat).permute(2, 0, 1).contiguous()[None].float() / 255.0  # evaluation's layout
    x = reference[None].float() / 255.0
    value = float(psnr(y, x)[0])
    if ms_ssim_levels(*x.shape[-2:]) < len(MS_SSIM_WEIGHTS):
        return value, None
    return value, float(ms_ssim(y, x)[0])
