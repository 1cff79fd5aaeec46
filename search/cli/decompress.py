"""shrink decompress IN.jpg [--model BUNDLE_OR_FAMILY] -o OUT.png [--reference ORIGINAL] [--force]

Without --model, the zoo model (``shrink zoo list``) whose bundle the file's header names decompresses it.

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

from shrink.compression import zoo
from shrink.compression.api import decompress_image, read_shrink_file, reconstruction_quality
from shrink.compression.container import read_photo
from shrink.compression.files import atomic_write
from shrink.compression.metrics import bpp, msssim_db

from ._common import ArgumentParser, run_command
from .compress import add_common_arguments, refuse_existing, resolve_device, say

PROG = "shrink decompress"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG, description="Decompress a shrink JPEG (bicubic upscale -> RecCNN) into an image file."
    )
    parser.add_argument("input", metavar="IN", help="a file written by shrink compress")
    parser.add_argument("--reference", help="the original image: report MS-SSIM and PSNR against it")
    add_common_arguments(parser, model_required=False)  # default: the zoo model the file's header names
    return parser


def output_format(path: Path) -> str:
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None or image_format not in Image.SAVE:
        raise ValueError(f"-o {path}: no image format for the extension {path.suffix!r} (use .png)")
    return image_format


def quality_report(x_hat: np.ndarray, reference: torch.Tensor) -> str:
    """MS-SSIM (when both sides exceed 160 px) and PSNR of the 8-bit reconstruction against the original."""
    psnr_db, msssim = reconstruction_quality(x_hat, reference)
    text = f", PSNR {psnr_db:.2f} dB"
    if msssim is None:
        return text + ", MS-SSIM n/a (needs both sides > 160 px)"
    return text + f", MS-SSIM {msssim:.6f} ({msssim_db(msssim):.2f} dB)"


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
    device = resolve_device(args.device)
    model = args.model or zoo.model_for(header.bundle, str(source))
    x_hat = decompress_image(data, model, tile=args.tile, device=device, source=str(source))
    refuse_existing([target], args.force)
    atomic_write(target, lambda handle: Image.fromarray(x_hat, "RGB").save(handle, format=image_format))
    report = f"{source} -> {target}: {header.width}x{header.height}, {len(data)} bytes, "
    report += f"{bpp(len(data), header.height, header.width):.4f} bpp"
    print(report + (quality_report(x_hat, reference) if reference is not None else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
