"""What every subcommand shares: one-line user errors with exit code 2, RD tables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from shrink.compression.bundle import BundleError
from shrink.compression.checkpoint import CheckpointError
from shrink.compression.config import ConfigError
from shrink.compression.data import ImageLoadError
from shrink.compression.rd import RDCurve, metric_at_rate

USER_ERRORS = (ConfigError, ImageLoadError, CheckpointError, BundleError, FileNotFoundError, ValueError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (exit code 2, as argparse's own)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_set_argument(parser: argparse.ArgumentParser, example: str) -> None:
    """The repeatable ``--set KEY=VALUE`` override option (validated like the file it overrides)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a field, e.g. --set {example} (repeatable)",
    )


def run_command(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int], argv) -> int:
    """Parse ``argv`` and run; user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error already printed
        return int(exit_.code or 0)
    try:
        return run(args)
    except USER_ERRORS as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2


def format_rd_table(curve: RDCurve, anchor: RDCurve | None = None) -> str:
    """One row per quality; with an anchor, its MS-SSIM at the same bpp and the gain in dB."""
    header = f"{'quality':>7} {'bpp':>7} {'MS-SSIM':>8} {'dB':>6} {'PSNR':>6}"
    if anchor is not None:
        header += f" {anchor.name + ' @bpp':>13} {'gain dB':>8}"
    rows = [header]
    for point in curve.points:
        row = (
            f"{point.quality!s:>7} {point.bpp:7.4f} {point.msssim:8.4f} "
            f"{point.msssim_db:6.2f} {point.psnr:6.2f}"
        )
        if anchor is not None:
            anchor_db = metric_at_rate(anchor, point.bpp, "msssim_db")
            anchor_msssim = 1 - 10 ** (-anchor_db / 10)
            row += f" {anchor_msssim:13.4f} {point.msssim_db - anchor_db:+8.2f}"
        rows.append(row)
    return "\n".join(rows)
