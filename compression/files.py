"""Atomic file writes and bounded reads.

Writes: a temp file beside the target, fsync, rename over it; no reader sees half a file. What is written
gets the modes any command-line tool gives (files 0666, folders 0777, less the umask), not the private ones
``mkstemp``/``mkdtemp`` create.

An existing target that is not a regular file (a FIFO, a device, a socket, a folder, or a link to one) is
refused: the rename would replace the node itself (``/dev/null``, as root).

Reads of files we did not just write (:func:`read_regular`): the file must be a regular file of at most
``limit`` bytes, and not a link unless the user named it (a file named inside a bundle or family is never
followed); a FIFO, a device or a link to one is refused before a byte is read. :func:`read_json` is the one
reader of every JSON file a user hands us (curve files, cards, manifests): on top of those checks, UTF-8
text, nested a bounded depth, every number a finite double.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

MAX_JSON_DEPTH = 32  # our deepest file (a family's member curves) nests 6 levels


class UnreadableFile(ValueError):
    """A file that is not a regular file (a FIFO, a device, a link), is larger than its limit, or (for
    :func:`read_json`) is not JSON of a bounded shape; the message names the file."""


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode(path: str | Path, directory: bool = False) -> None:
    """Give ``path`` the mode ``open``/``mkdir`` would: 0666 (0777 for a folder) less the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


class NotReplaceable(ValueError):
    """An existing output that is not a regular file: renaming over it would replace the node itself."""


NOT_REGULAR_OUTPUT = "it exists and is not a regular file (a FIFO, device, socket or folder: refused)"


def replaceable(path: str | Path) -> bool:
    """False when ``path`` (or what a link there points to) exists and is not a regular file."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return True  # nothing there: created


def check_replaceable(path: str | Path) -> None:
    """Refuse to write ``path`` over a FIFO, a device (``-o /dev/null --force`` as root) or a folder."""
    if not replaceable(path):
        raise NotReplaceable(f"cannot write {path}: {NOT_REGULAR_OUTPUT}")


def atomic_write(path: str | Path, writer: Callable[[BinaryIO], object]) -> Path:
    """Call ``writer(file)`` on a temp file beside ``path``, fsync it, then rename it over ``path`` (which
    must be absent or a regular file: :func:`check_replaceable`)."""
    path = Path(path)
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            writer(handle)
            handle.flush()
            os.fsync(handle.fileno())
        public_mode(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno is not None and str(path) not in str(error):
            # write() and fsync() errors name no file: say which one could not be written
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def check_regular(path: str | Path, limit: int, what: str = "file", follow_links: bool = True) -> int:
    """The size of ``path``, a regular file of at most ``limit`` bytes (a link to one only with
    ``follow_links``); else :class:`UnreadableFile` (``FileNotFoundError`` when it is missing)."""
    info = os.stat(path) if follow_links else os.lstat(path)
    _check_stat(path, info, limit, what)
    return info.st_size


def read_regular(path: str | Path, limit: int, what: str = "file", follow_links: bool = False) -> bytes:
    """The bytes of ``path``, checked as :func:`check_regular` says on the open file itself (no race)."""
    with _open_regular(path, limit, what, follow_links) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:  # grew since the check
        raise UnreadableFile(f"{path}: the {what} is over its limit of {limit} bytes")
    return data


def read_start(
    path: str | Path, count: int, limit: int, what: str = "file", follow_links: bool = True
) -> bytes:
    """The first ``count`` bytes of ``path`` (what kind of file it is), checked as :func:`read_regular`."""
    with _open_regular(path, limit, what, follow_links) as handle:
        return handle.read(count)


@contextmanager
def _open_regular(path: str | Path, limit: int, what: str, follow_links: bool) -> Iterator[BinaryIO]:
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_links else os.O_NOFOLLOW)  # a FIFO must not block
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if not follow_links and os.path.islink(path):
            raise UnreadableFile(f"{path}: the {what} is a symbolic link (refused)") from None
        raise error
    with os.fdopen(fd, "rb") as handle:
        _check_stat(path, os.fstat(fd), limit, what)
        yield handle


def read_json(path: str | Path, limit: int, what: str = "file", follow_links: bool = True) -> Any:
    """The JSON document in ``path`` (read as :func:`read_regular`): UTF-8 text, nested at most
    :data:`MAX_JSON_DEPTH` levels, every number a finite double (no NaN, no Infinity, no 400-digit integer);
    anything else is one :class:`UnreadableFile` line naming the file."""
    data = read_regular(path, limit, what, follow_links)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        where = f"byte 0x{data[error.start]:02x} at offset {error.start}"
        raise UnreadableFile(f"{path}: the {what} is not UTF-8 text ({where})") from None
    too_deep = f"{path}: the {what} nests deeper than {MAX_JSON_DEPTH} levels"
    try:
        document = json.loads(
            text, parse_int=_finite_int, parse_float=_finite_float, parse_constant=_no_constant
        )
    except _NotFinite as error:
        raise UnreadableFile(f"{path}: the {what} holds {error}") from None
    except RecursionError:  # nested beyond the parser's own stack
        raise UnreadableFile(too_deep) from None
    except ValueError as error:
        raise UnreadableFile(f"{path}: the {what} is not valid JSON ({error})") from None
    if _too_deep(document):
        raise UnreadableFile(too_deep)
    return document


class _NotFinite(ValueError):
    pass


def _finite_int(text: str) -> int:
    if not math.isfinite(float(text)):  # float() of a long digit string is inf, never an OverflowError
        raise _NotFinite(f"the integer {_shown(text)}, beyond a double's range")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(f"the number {_shown(text)}, beyond a double's range")
    return value


def _no_constant(text: str) -> float:
    raise _NotFinite(f"{text}, which is not a finite number")


def _shown(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text)} characters)"


def _too_deep(document: Any) -> bool:
    """Whether ``document`` nests more than :data:`MAX_JSON_DEPTH` objects and arrays (no recursion)."""
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return True
            children = value.values() if isinstance(value, dict) else value
            pending.extend((child, depth + 1) for child in children)
    return False


def _check_stat(path: str | Path, info: os.stat_result, limit: int, what: str) -> None:
    if stat.S_ISLNK(info.st_mode):
        raise UnreadableFile(f"{path}: the {what} is a symbolic link (refused)")
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableFile(f"{path}: the {what} is not a regular file (a FIFO, device or folder: refused)")
    if info.st_size > limit:
        raise UnreadableFile(f"{path}: the {what} is {info.st_size} bytes, over its limit of {limit}")
