"""shrink decompress IN.jpg --model BUNDLE_OR_FAMILY -o OUT.png [--reference ORIGINAL] [--force]

Refuses (exit 2) a file that is not a shrink file, a truncated or altered one (header included), a bundle
whose sha256 is not the one the file was made with (with a codec family: a file whose bundle is not one of
its members) and a header whose ratio or size does not fit the bundle's model, all before any pixel is
computed; never overwrites without --force; writes atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from shrink.compression.bundle import load_bundle
from shrink.compression.codecs import from_uint8
from shrink.compression.container import (
    MAX_FILE_BYTES,
    ContainerError,
    Header,
    check_pixels,
    decode_compact,
    read_header,
    read_photo,
)
from shrink.compression.family import is_family, load_family
from shrink.compression.files import atomic_write, read_regular
from shrink.compression.metrics import MS_SSIM_WEIGHTS, bpp, ms_ssim, ms_ssim_levels, msssim_db, psnr
from shrink.compression.tiling import reconstruct_uint8, tilings

from ._common import ArgumentParser, run_command
from .compress import add_common_arguments, refuse_existing, resolve_device, say

PROG = "shrink decompress"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG, description="Decompress a shrink JPEG (bicubic upscale -> RecCNN) into an image file."
    )
    parser.add_argument("input", metavar="IN", help="a file written by shrink compress")
    parser.add_argument("--reference", help="the original image: report MS-SSIM and PSNR against it")
    add_common_arguments(parser)
    return parser


def output_format(path: Path) -> str:
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None or image_format not in Image.SAVE:
        raise ValueError(f"-o {path}: no image format for the extension {path.suffix!r} (use .png)")
    return image_format


def read_shrink_file(path: Path) -> tuple[bytes, Header]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is not a file")
    data = read_regular(path, MAX_FILE_BYTES, "shrink file", follow_links=True)
    try:
        header = read_header(data)
    except ContainerError as error:
        raise ContainerError(f"{path}: {error}") from None
    check_pixels(header.width, header.height, f"{path} (original size in its header)")
    return data, header


def check_bundle(path: Path, header: Header, sha: str, bundle: str, ratio: int) -> None:
    """The bundle must be the file's, and its model's ratio the header's (a header rewritten with a new
    CRC would otherwise upscale a compact image by the wrong ratio)."""
    if sha != header.bundle:
        raise ValueError(
            f"bundle hash mismatch: {path} was made with bundle sha256 {header.bundle[:16]}..., "
            f"but {bundle} is {sha[:16]}...; decompress it with the bundle that compressed it"
        )
    if ratio != header.ratio:
        raise ContainerError(
            f"{path}: its header says ratio {header.ratio}, its bundle's model has {ratio} (altered header)"
        )


def bundle_for(source: Path, header: Header, model: str) -> str:
    """``model`` itself, or the member of the family ``model`` whose bundle the file's header names."""
    if not is_family(model):
        return model
    family = load_family(model)
    member = family.member(header.bundle)
    if member is None:
        raise ValueError(
            f"{source} was made with bundle sha256 {header.bundle[:16]}..., which is not a member of the "
            f"family {model}; decompress it with the family or bundle that compressed it"
        )
    return str(family.bundle_path(member))


def quality_report(x_hat: np.ndarray, reference: torch.Tensor) -> str:
    """MS-SSIM (when both sides exceed 160 px) and PSNR of the 8-bit reconstruction against the original."""
    y = torch.from_numpy(x_hat).permute(2, 0, 1).contiguous()[None].float() / 255.0  # evaluation's layout
    x = reference[None].float() / 255.0
    text = f", PSNR {float(psnr(y, x)[0]):.2f} dB"
    if ms_ssim_levels(*x.shape[-2:]) < len(MS_SSIM_WEIGHTS):
        return text + ", MS-SSIM n/a (needs both sides > 160 px)"
    value = float(ms_ssim(y, x)[0])
    return text + f", MS-SSIM {value:.6f} ({msssim_db(value):.2f} dB)"


def run(args: argparse.Namespace) -> int:
    target, source = Path(args.output), Path(args.input)
    image_format = output_format(target)
    refuse_existing([target], args.force)
    data, header = read_shrink_file(source)
    reference = None
    if args.reference:
        photo = read_photo(args.reference)
        say(PROG, photo.notes)
        if photo.size != (header.height, header.width):
            raise ValueError(
                f"--reference {args.reference} is {photo.size[1]}x{photo.size[0]}, "
                f"{source} holds {header.width}x{header.height}"
            )
        reference = photo.pixels
    model, _, manifest = load_bundle(bundle_for(source, header, args.model), resolve_device(args.device))
    check_bundle(source, header, manifest["sha256"], args.model, model.ratio)
    try:
        decoded = from_uint8(decode_compact(data, header))[None]
    except ContainerError as error:
        raise ContainerError(f"{source}: {error}") from None
    size, tiling = (header.height, header.width), tilings(model, args.tile)[1]
    x_hat = reconstruct_uint8(model, decoded, size, tiling, header.quality)
    refuse_existing([target], args.force)
    atomic_write(target, lambda handle: Image.fromarray(x_hat, "RGB").save(handle, format=image_format))
    report = f"{source} -> {target}: {header.width}x{header.height}, {len(data)} bytes, "
    report += f"{bpp(len(data), header.height, header.width):.4f} bpp"
    print(report + (quality_report(x_hat, reference) if reference is not None else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
