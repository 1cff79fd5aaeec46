"""What every subcommand shares: one-line user errors with exit code 2, RD tables."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path

from shrink.compression.bundle import BundleError, OutputExists
from shrink.compression.checkpoint import CheckpointError
from shrink.compression.config import ConfigError
from shrink.compression.data import ImageLoadError
from shrink.compression.files import NOT_REGULAR_OUTPUT, replaceable
from shrink.compression.metrics import msssim_from_db
from shrink.compression.rd import RDCurve, gain_at_rate, metric_at_rate
from shrink.compression.text import plain_text

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


# Numbers are bounded where they are parsed (argparse ``type=``): a usage error, exit 2, before any work; the
# message shows the parsed value, never the raw text (which may hold a newline).
MAX_COUNT = 1_000_000  # trials, members, workers: far above any real use, far below what would overflow
MAX_SECONDS = 1e9  # 31 years


def positive_number(convert: Callable[[str], float], high: float) -> Callable[[str], float]:
    """A positive ``int`` or ``float`` (``convert``) of at most ``high`` (NaN and infinity refused)."""
    noun = "integer" if convert is int else "number"

    def positive(text: str) -> float:
        value = convert(text)
        if not value > 0:  # NaN too
            raise argparse.ArgumentTypeError(f"must be a positive {noun}, got {_number(value)}")
        if not value <= high:
            raise argparse.ArgumentTypeError(f"must be at most {_number(high)}, got {_number(value)}")
        return value

    positive.__name__ = f"positive_{convert.__name__}"  # argparse: "invalid positive_int value: 'x'"
    return positive


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


positive_int = positive_number(int, MAX_COUNT)
positive_float = positive_number(float, MAX_SECONDS)


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An integer in ``low..high``."""

    def integer(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in {low}..{high}, got {value}")
        return value

    return integer


def quality_arg(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"quality must be in 1..100, got {value}")
    return value


def run_command(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int], argv) -> int:
    """Parse ``argv`` and run; user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error already printed
        return int(exit_.code or 0)
    try:
        return run(args)
    except USER_ERRORS as error:  # its message may quote a file: no control code reaches the terminal
        if isinstance(error, OutputExists):  # the library's overwrite=True is a command's --force
            error = OutputExists(error.path, "--force")
        print(f"{parser.prog}: error: {plain_text(error, limit=None)}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. an output folder without write permission that appeared after the checks
        if error.errno not in PATH_ERRNOS:
            raise
        print(f"{parser.prog}: error: {plain_text(os_error_line(error), limit=None)}", file=sys.stderr)
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
        if not (path.is_dir() or replaceable(path)):  # a FIFO or a device: --force or not
            return NOT_REGULAR_OUTPUT
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
        header += f" {plain_text(anchor.name) + ' @bpp':>13} {'gain dB':>8}"
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
