"""What every subcommand shares: one-line user errors with exit code 2, RD tables."""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from shrink.compression.bundle import BundleError
from shrink.compression.checkpoint import CheckpointError
from shrink.compression.config import ConfigError
from shrink.compression.data import ImageLoadError
from shrink.compression.metrics import msssim_from_db
from shrink.compression.rd import RDCurve, gain_at_rate, metric_at_rate

USER_ERRORS = (ConfigError, ImageLoadError, CheckpointError, BundleError, FileNotFoundError, ValueError)
# OSErrors that say a path on the command line cannot be used (a failing disk or network is not bad input)
PATH_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EROFS, errno.ENAMETOOLONG}
)


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


def positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


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
    except OSError as error:  # e.g. an output folder without write permission that appeared after the checks
        if error.errno not in PATH_ERRNOS:
            raise
        print(f"{parser.prog}: error: {os_error_line(error)}", file=sys.stderr)
        return 2


def os_error_line(error: OSError) -> str:
    """``PATH: Permission denied``: the path(s) and the OS's words, without the ``[Errno N]`` noise."""
    paths = " -> ".join(str(path) for path in (error.filename, error.filename2) if path is not None)
    reason = error.strerror or str(error)
    return f"{paths}: {reason}" if paths else reason


def output_problem(path: str | Path, kind: str) -> str | None:
    """Why ``path`` cannot be written as a ``kind`` ("file", "dir" or "any"), or None when it can.

    What is written is created under the first existing ancestor (atomic writes put a temp file beside the
    target), so that ancestor must be a folder this process may write into.
    """
    path = Path(path)
    if path.exists():
        if kind == "file" and path.is_dir():
            return "it is a directory"
        if kind == "dir" and not path.is_dir():
            return "it exists and is not a directory"
        folder = path if path.is_dir() else path.parent
    else:
        folder = path.parent
        while not folder.exists():  # Path.exists() is False below a regular file too (ENOTDIR)
            folder = folder.parent
        if not folder.is_dir():
            return f"{folder} is not a directory"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"no permission to write in {folder.absolute() if folder == Path('.') else folder}"
    return None


def check_output(path: str | Path, kind: str = "file") -> None:
    """Refuse, before any work, an output path that cannot be written (one line naming it)."""
    problem = output_problem(path, kind)
    if problem is not None:
        raise ValueError(f"cannot write {path}: {problem}")


def _output_type(kind: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        problem = output_problem(text, kind)
        if problem is not None:
            raise argparse.ArgumentTypeError(f"cannot write {text}: {problem}")
        return text

    check.__name__ = f"output {kind}"
    return check


# argparse ``type=`` of output options: an unwritable path is a usage error naming the option (exit 2)
output_file = _output_type("file")
output_dir = _output_type("dir")
output_file_or_dir = _output_type("any")


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
            row += f" {msssim_from_db(anchor_db):13.4f} {gain_at_rate(point, anchor):+8.2f}"
        rows.append(row)
    return "\n".join(rows)
