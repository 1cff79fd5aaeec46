"""shrink compress IN [IN ...] --model BUNDLE_OR_FAMILY [--quality Q | --bpp TARGET | --msssim Q] [--effort N]
    [--optimise STEPS [--optimise-loss msssim|mse]] -o OUT [--force]

Compresses every input before writing the first output (a bad input writes nothing), then writes each
image as a standard JPEG of its compact image (any viewer opens it) carrying, in an APP11
segment, what ``shrink decompress`` needs: see :mod:`shrink.compression.container`. With a codec family
(``shrink export --family``), ``--bpp`` picks the member whose test curve is highest at that rate
(:meth:`shrink.compression.family.Family.member_at`); the file's header names that member's bundle.
With ``--msssim`` or ``--effort`` the encoder chooses per image (:mod:`shrink.compression.choose`): it decodes
its candidates and keeps the best for this image. With ``--optimise STEPS`` the encoder optimises each
image's compact image for the decoder it has (:mod:`shrink.compression.optimise`) and keeps it only where its
real file measures better. ``-o`` names a JPEG: a name whose extension says another
image format (``out.png``) is refused, as is an existing output that is not a regular file, --force or not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image

from shrink.compression.api import (
    OpenBundle,
    RateError,
    bundle_for_rate,
    check_bpp,
    compress_image,
    open_bundle,
)
from shrink.compression.choose import choose, open_candidates
from shrink.compression.container import read_header, read_photo, segment
from shrink.compression.family import is_family
from shrink.compression.files import atomic_write, check_replaceable
from shrink.compression.metrics import bpp
from shrink.compression.optimise import DISTORTIONS, MAX_STEPS, compress_optimised
from shrink.compression.tiling import DEFAULT_TILE

from ._common import (
    ArgumentParser,
    int_in,
    output_file_or_dir,
    positive_number,
    quality_arg,
    run_command,
)

MAX_EFFORT = 100  # models tried per image; a family has a handful
MAX_TILE = 1 << 16  # original pixels per tile side; Pillow's pixel limit keeps images far narrower


def bpp_target(text: str) -> float:
    """A finite target bpp within the library's bounds (:func:`check_bpp`): 1e308 would overflow."""
    value = float(text)
    try:
        check_bpp(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def msssim_target(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:  # as choose.check_target says it
        raise argparse.ArgumentTypeError(f"a target MS-SSIM lies in (0, 1), got {value:g}")
    return value


def add_common_arguments(parser: argparse.ArgumentParser, model_required: bool = True) -> None:
    """--model, -o, --force, --tile and --device: shared by compress and decompress."""
    parser.add_argument(
        "--model",
        required=model_required,
        help="an export bundle or codec family (shrink export [--family]), a training checkpoint, "
        "or zoo:NAME (shrink zoo list)",
    )
    parser.add_argument(
        "-o", "--output", required=True, type=output_file_or_dir, help="output file (or directory: see above)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument(
        "--tile",
        type=int_in(0, MAX_TILE),
        default=DEFAULT_TILE,
        help=f"tile side in original pixels for bounded memory (default {DEFAULT_TILE}; 0 = whole image)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    elif name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available")
    return torch.device(name)


def refuse_existing(paths: list[Path], force: bool) -> None:
    for path in paths:
        if not path.is_dir():
            check_replaceable(path)  # a FIFO or a device is refused, --force or not
        if path.exists() and not force:
            raise ValueError(f"{path} exists (pass --force to overwrite)")
        if path.is_dir():
            raise ValueError(f"{path} is a directory")


def say(prog: str, notes: list[str]) -> None:
    for note in notes:
        print(f"{prog}: {note}", file=sys.stderr)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="shrink compress",
        description="Compress images into standard JPEG files of the compact image (ComCNN -> JPEG). "
        "-o is a file for one input and a directory for several (OUT/<stem>.jpg).",
    )
    parser.add_argument("inputs", nargs="+", metavar="IN", help="images in any format Pillow reads")
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument(
        "--quality",
        type=quality_arg,
        metavar="Q",
        help="JPEG (or jpegli) quality 1..100 (default: the bundle's codec.quality, "
        "else the middle of its training quality_range)",
    )
    rate.add_argument(
        "--bpp",
        type=bpp_target,
        metavar="TARGET",
        help="highest quality whose file (all bytes) fits TARGET bits/pixel",
    )
    rate.add_argument(
        "--msssim",
        type=msssim_target,
        metavar="Q",
        help="the smallest file whose decoded MS-SSIM reaches Q (0..1), measured per image",
    )
    parser.add_argument(
        "--effort",
        type=positive_number(int, MAX_EFFORT),
        metavar="N",
        help="choose per image among N models (a family's members, most promising first): decode each "
        "candidate and keep the best MS-SSIM within --bpp, or the smallest file reaching --msssim "
        "(default with --msssim: 2)",
    )
    parser.add_argument(
        "--optimise",
        type=int_in(0, MAX_STEPS),
        default=0,
        metavar="STEPS",
        help="optimise each image's compact image for STEPS gradient steps through the JPEG proxy and the "
        "RecCNN at the target's quality, and keep it only where its real file measures better (slower "
        "encodes, the same decoder; see docs/commands.md)",
    )
    parser.add_argument(
        "--optimise-loss",
        choices=DISTORTIONS,
        default="msssim",
        help="what --optimise maximises: MS-SSIM dB (default) or PSNR (mse)",
    )
    add_common_arguments(parser)
    return parser


def check_jpeg_name(path: Path) -> None:
    """Refuse a name whose extension says another image format (``out.png``): what is written is a JPEG."""
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format not in (None, "JPEG"):
        raise ValueError(f"-o {path}: compress writes a JPEG file, not {image_format} (use .jpg)")


def output_paths(inputs: list[str], output: str, force: bool) -> list[Path]:
    out = Path(output)
    if len(inputs) == 1 and not out.is_dir():
        check_jpeg_name(out)
        targets = [out]
    elif out.exists() and not out.is_dir():
        raise ValueError(f"-o {out}: several inputs need a directory")
    else:
        targets = [out / f"{Path(name).stem}.jpg" for name in inputs]
    if len(set(targets)) != len(targets):
        raise ValueError(f"two inputs share a name and would both be written to {out}")
    refuse_existing(targets, force)
    return targets


def compress_file(args: argparse.Namespace, bundle: OpenBundle, source: str) -> bytes:
    """The shrink file of one input (its notes said on stderr)."""
    photo = read_photo(source)
    say("shrink compress", photo.notes)
    try:
        return compress_image(photo.pixels, bundle, quality=args.quality, bpp=args.bpp, tile=args.tile)
    except RateError as error:  # "bpp T (N bytes at WxH) cannot be met: ..."
        raise ValueError(f"{source}: --{error}") from None


def chosen_file(args: argparse.Namespace, models: list[tuple[str, OpenBundle]], source: str) -> bytes:
    """The shrink file of one input chosen per image (:func:`choose`), what was chosen said on stderr."""
    photo = read_photo(source)
    say("shrink compress", photo.notes)
    try:
        choice = choose(photo.pixels, models, bpp=args.bpp, msssim=args.msssim, tile=args.tile)
    except RateError as error:
        raise ValueError(f"{source}: {error}") from None
    say(
        "shrink compress",
        [
            f"{source}: chose {choice.model} at quality {choice.quality}, MS-SSIM "
            f"{choice.msssim:.4f} ({choice.decoded} candidate files decoded)"
        ],
    )
    return choice.data


def per_image(args: argparse.Namespace) -> bool:
    if args.effort is not None and args.bpp is None and args.msssim is None:
        raise ValueError("--effort chooses per image for a target: give --bpp or --msssim")
    if args.optimise and args.effort is not None:
        raise ValueError("--optimise works on one model: give --effort or --optimise, not both")
    return not args.optimise and (args.msssim is not None or args.effort is not None)


def optimised_file(args: argparse.Namespace, bundle: OpenBundle, source: str) -> bytes:
    """The shrink file of one input with its compact image optimised (:func:`compress_optimised`), what was
    kept said on stderr, with the steps' progress."""
    photo = read_photo(source)
    say("shrink compress", photo.notes)
    report = progress_line(source, args.optimise)
    try:
        result = compress_optimised(
            photo.pixels,
            bundle,
            steps=args.optimise,
            quality=args.quality,
            bpp=args.bpp,
            msssim=args.msssim,
            distortion=args.optimise_loss,
            tile=args.tile,
            progress=report,
        )
    except RateError as error:
        raise ValueError(f"{source}: {error}") from None
    unit = "PSNR" if args.optimise_loss == "mse" else "MS-SSIM dB"
    kept = (
        "the optimised compact image" if result.optimised else "the plain compact image (it measured better)"
    )
    say(
        "shrink compress",
        [
            f"{source}: kept {kept}: quality {result.quality}, {len(result.data)} bytes, {unit} "
            f"{result.kept_db:.3f} (plain: {result.plain_bytes} bytes, {result.plain_db:.3f})"
        ],
    )
    return result.data


def progress_line(source: str, steps: int):
    """A progress callback that says every tenth of the steps (and the last) on stderr."""
    every = max(1, steps // 10)

    def report(step: int, total: int) -> None:
        if step % every == 0 or step == total:
            print(f"shrink compress: {source}: optimising, step {step}/{total}", file=sys.stderr, flush=True)

    return report


def bundle_for(args: argparse.Namespace) -> str:
    """The bundle to compress with: ``--model`` itself, or the member of a family for ``--bpp``."""
    if is_family(args.model) and args.bpp is None:
        raise ValueError(
            f"--model {args.model} is a codec family: give --bpp TARGET (the member depends on it)"
        )
    path, notes = bundle_for_rate(args.model, args.bpp)
    say("shrink compress", notes)
    return path


def run(args: argparse.Namespace) -> int:
    targets = output_paths(args.inputs, args.output, args.force)
    # Every input is compressed (in memory) before the first output is written: a bad one writes nothing.
    if per_image(args):
        models = open_candidates(args.model, args.bpp, args.msssim, args.effort or 2)
        files = [chosen_file(args, models, source) for source in args.inputs]
    else:
        if args.optimise and args.msssim is not None and is_family(args.model):
            raise ValueError("--optimise --msssim needs a bundle, not a codec family (or give --bpp)")
        bundle = open_bundle(bundle_for(args), resolve_device(args.device))
        bundle.jpeg_codec()  # a WebP/AVIF bundle is refused before any work
        encode = optimised_file if args.optimise else compress_file
        files = [encode(args, bundle, source) for source in args.inputs]
    refuse_existing(targets, args.force)
    for source, target, data in zip(args.inputs, targets, files, strict=True):
        atomic_write(target, lambda handle, data=data: handle.write(data))
        header = read_header(data)
        rows, cols = header.compact_size
        print(
            f"{source} -> {target}: {header.width}x{header.height} -> {cols}x{rows} (ratio {header.ratio}), "
            f"quality {header.quality}, {len(data)} bytes (header {len(segment(header))}), "
            f"{bpp(len(data), header.height, header.width):.4f} bpp"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
