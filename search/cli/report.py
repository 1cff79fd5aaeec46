"""shrink report --storage URL --study-name N [--bundles DIR] [--data DIR] [--curves FILE ...]
[--reference compressai-kodak] --out report.html"""

from __future__ import annotations

import argparse
from pathlib import Path

from shrink.dashboards.references import REFERENCE_SETS
from shrink.dashboards.report import ReportOptions, write_report
from shrink.dashboards.study_info import storage_roots
from shrink.search.storage import redact
from shrink.search.study import load_study

from ._common import ArgumentParser, check_output, int_in, output_file, quality_arg, run_command


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="shrink report",
        description="One self-contained HTML report of a study (opens offline: plotly.js is inlined).",
    )
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study-name", required=True)
    parser.add_argument("--out", required=True, type=output_file, help="the HTML file to write (atomically)")
    parser.add_argument("--bundles", type=Path, help="exported bundles (shrink export --pareto --out DIR)")
    parser.add_argument("--data", type=Path, help="another image set (e.g. Kodak) to evaluate the bundles on")
    parser.add_argument(
        "--data-baselines", type=Path, help="a `shrink baselines --json` file of --data, instead of measuring"
    )
    parser.add_argument(
        "--qualities",
        type=quality_arg,
        nargs="+",
        help="quality grid of baselines and bundles (default: 5..95 by 5)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        help="JSON cache of measured baseline and bundle curves (default: OUT.cache.json beside the report)",
    )
    parser.add_argument("--no-cache", action="store_true", help="measure everything again, write no cache")
    parser.add_argument(
        "--gallery-images", type=int_in(0, 100), default=3, help="dev images in the gallery (default 3)"
    )
    parser.add_argument(
        "--crop", type=int_in(1, 4096), default=128, help="gallery crop side in pixels (default 128)"
    )
    parser.add_argument(
        "--curves",
        type=Path,
        nargs="+",
        default=[],
        metavar="FILE",
        help="curve files to draw beside ours, dashed: shrink eval/baselines JSON, or CompressAI's results",
    )
    parser.add_argument(
        "--reference",
        nargs="+",
        default=[],
        choices=sorted(REFERENCE_SETS),
        help="shipped published curves to draw, dashed (off by default): compressai-kodak is CompressAI's "
        "Kodak JPEG, WebP, BPG 4:4:4, VTM, AV1 and three MS-SSIM-trained models",
    )
    return parser


def options_from(args: argparse.Namespace) -> ReportOptions:
    out = Path(args.out)
    cache = None if args.no_cache else (args.cache or out.with_name(out.name + ".cache.json"))
    return ReportOptions(
        bundles=args.bundles,
        data=args.data,
        data_baselines=args.data_baselines,
        qualities=args.qualities,
        cache=cache,
        gallery_images=args.gallery_images,
        crop=args.crop,
        roots=storage_roots(args.storage),
        storage_label=redact(args.storage),
        curves=args.curves,
        references=args.reference,
    )


def run(args: argparse.Namespace) -> int:
    if args.data_baselines is not None and args.data is None:
        raise ValueError("--data-baselines needs --data (the image set those baselines were measured on)")
    for option, path in (("--bundles", args.bundles), ("--data", args.data)):
        if path is not None and not path.is_dir():
            raise FileNotFoundError(f"{option}: no folder {path}")
    if args.data_baselines is not None and not args.data_baselines.is_file():
        raise FileNotFoundError(f"--data-baselines: no file {args.data_baselines}")
    for path in args.curves:
        if not path.is_file():
            raise FileNotFoundError(f"--curves: no file {path}")
    if args.cache is not None and not args.no_cache:
        check_output(args.cache)
    study = load_study(args.storage, args.study_name)
    path = write_report(study, args.out, options_from(args))
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
