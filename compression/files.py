"""Atomic file writes and bounded reads.

Writes: a temp file beside the target, fsync, rename over it; no reader sees half a file. What is written
gets the modes any command-line tool gives (files 0666, folders 0777, less the umask), not the private ones
``mkstemp``/``mkdtemp`` create.

Reads of files we did not just write (:func:`read_regular`): the file must be a regular file of at most
``limit`` bytes, and not a link unless the user named it (a file named inside a bundle or family is never
followed); a FIFO, a device or a link to one is refused before a byte is read.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


class UnreadableFile(ValueError):
    """A file that is not a regular file (a FIFO, a device, a link) or is larger than its limit."""


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode(path: str | Path, directory: bool = False) -> None:
    """Give ``path`` the mode ``open``/``mkdir`` would: 0666 (0777 for a folder) less the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


def atomic_write(path: str | Path, writer: Callable[[BinaryIO], object]) -> Path:
    """Call ``writer(file)`` on a temp file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
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
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_links else os.O_NOFOLLOW)  # a FIFO must not block
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if not follow_links and os.path.islink(path):
            raise UnreadableFile(f"{path}: the {what} is a symbolic link (refused)") from None
        raise error
    with os.fdopen(fd, "rb") as handle:
        _check_stat(path, os.fstat(fd), limit, what)
        data = handle.read(limit + 1)
    if len(data) > limit:  # grew since the check
        raise UnreadableFile(f"{path}: the {what} is over its limit of {limit} bytes")
    return data


def _check_stat(path: str | Path, info: os.stat_result, limit: int, what: str) -> None:
    if stat.S_ISLNK(info.st_mode):
        raise UnreadableFile(f"{path}: the {what} is a symbolic link (refused)")
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableFile(f"{path}: the {what} is not a regular file (a FIFO, device or folder: refused)")
    if info.st_size > limit:
        raise UnreadableFile(f"{path}: the {what} is {info.st_size} bytes, over its limit of {limit}")
