"""shrink export --storage URL --study-name N (--trial T [T ...] | --pareto) --out DIR
[--family [--test FOLDER] [--qualities Q ...]]
shrink export --checkpoint RUN/best.ckpt --out BUNDLE
shrink export --bundle BUNDLE [BUNDLE ...] --family --test FOLDER --out FAMILY"""

from __future__ import annotations

import argparse

from shrink.compression.baselines import DEFAULT_QUALITIES, codec_curve
from shrink.compression.bdrate import safe_bd_rate
from shrink.compression.bundle import bundle_from_checkpoint, checkpoint_metrics
from shrink.compression.codecs import JpegCodec, MozjpegCodec
from shrink.compression.data import load_images
from shrink.compression.evaluate import family_of_bundles
from shrink.compression.family import Family
from shrink.search.export import chosen_trials, export_family, export_trial
from shrink.search.study import load_study

from ._common import MAX_COUNT, ArgumentParser, int_in, output_dir, quality_arg, run_command


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shrink export", description="Export trials as self-contained bundles.")
    parser.add_argument("--storage", help="the study's storage (with --trial or --pareto)")
    parser.add_argument("--study-name")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int_in(0, MAX_COUNT), nargs="+", help="complete trials by number")
    which.add_argument(
        "--pareto", action="store_true", help="every trial on the Pareto front (best, if 1 objective)"
    )
    which.add_argument("--checkpoint", help="a `shrink train` checkpoint (RUN/best.ckpt): OUT is its bundle")
    which.add_argument(
        "--bundle", nargs="+", help="bundles or zoo:NAME made one family (with --family, measured on --test)"
    )
    parser.add_argument(
        "--out",
        required=True,
        type=output_dir,
        help="bundles go to OUT/trial-NNNNN/ (--family: OUT is the family; --checkpoint: OUT is the bundle)",
    )
    parser.add_argument("--force", action="store_true", help="replace existing bundles")
    family = parser.add_argument_group("codec family")
    family.add_argument(
        "--family",
        action="store_true",
        help="one codec family of the trials: shrink compress --model OUT --bpp T picks the member",
    )
    family.add_argument(
        "--test", help="image folder measuring each member's test curve (when the study stores none)"
    )
    family.add_argument(
        "--qualities",
        type=quality_arg,
        nargs="+",
        default=list(DEFAULT_QUALITIES["down-jpeg"]),
        help="qualities of the test curves (default: the downscale baseline's grid, as shrink eval)",
    )
    return parser


def print_family(family: Family, test: str | None) -> None:
    for name, point in family.envelope():
        print(
            f"  envelope {point.bpp:.4f} bpp  MS-SSIM {point.msssim:.5f} ({point.msssim_db:.2f} dB)  {name}"
        )
    if not test:
        return
    images = load_images(test)
    for label, codec in (("JPEG", JpegCodec()), ("mozjpeg", MozjpegCodec())):  # the JPEG optimisers serve
        anchor = codec_curve(images, codec, DEFAULT_QUALITIES[codec.name])
        for metric in ("msssim_db", "psnr"):
            rate, why = safe_bd_rate(anchor, family.envelope_curve(), metric)
            text = f"{rate:+.2f} %" if rate is not None else f"n/a ({why})"
            print(f"  family BD-rate vs {label} on {test} ({metric}): {text}")


def run(args: argparse.Namespace) -> int:
    if args.checkpoint:
        return export_checkpoint(args)
    if args.bundle:
        return export_bundles(args)
    if not (args.storage and args.study_name):
        raise ValueError("--storage and --study-name are required with --trial or --pareto")
    study = load_study(args.storage, args.study_name)
    trials = chosen_trials(study, args.trial)
    if args.family:
        family = export_family(study, trials, args.out, args.test, args.qualities, overwrite=args.force)
        print(f"family {args.out}: {len(family.members)} members, sha256 {family.sha256[:16]}...")
        print_family(family, args.test)
        return 0
    for trial in trials:
        path = export_trial(study, trial, args.out, overwrite=args.force)
        print(f"trial {trial.number}: {path}")
    return 0


def export_checkpoint(args: argparse.Namespace) -> int:
    if args.family:
        raise ValueError("--family exports a study's trials; a checkpoint becomes one bundle")
    path = bundle_from_checkpoint(args.checkpoint, args.out, checkpoint_metrics(args.checkpoint), args.force)
    print(f"checkpoint {args.checkpoint}: {path}")
    return 0


def export_bundles(args: argparse.Namespace) -> int:
    if not (args.family and args.test):
        raise ValueError(
            "--bundle makes a family: give --family and --test (the images measuring each member)"
        )
    family = family_of_bundles(args.out, args.bundle, args.test, args.qualities, args.force, progress=True)
    print(f"family {args.out}: {len(family.members)} members, sha256 {family.sha256[:16]}...")
    print_family(family, args.test)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
