"""mozjpeg 4.0.3 as an in-memory encoder: trellis quantisation, progressive scans with optimised scan
splitting, optimised Huffman tables; standard JPEG files that Pillow and every viewer decode.

The library is the ``cjpeglib_mozjpeg403`` build that the ``jpeglib`` wheel (PyPI) ships, the only
maintained binary distribution of mozjpeg on PyPI (``mozjpeg-lossless-optimization`` only re-encodes
existing files losslessly: no trellis, no tables). We call its C entry point ``write_jpeg_spatial`` through
our own ``ctypes`` handle instead of jpeglib's Python layer because that layer keeps the library version in
a process-wide global (``jpeglib.version.set``: not safe with other threads using jpeglib) and reads and
writes named files on disk. The one C argument that must be a path is an anonymous memory file
(``memfd_create``), so nothing is ever written to a file system, whatever happens to the process; ctypes
releases the GIL during the call, so the codec pool's threads encode in parallel, each on its own
``jpeg_compress_struct``.

The wrapper installs libjpeg's default error handler, which ends the process on a libjpeg error. Every
input that libjpeg could refuse is checked here first: an HxWx3 uint8 array of 1..65500 pixels a side, a
quality of 1..100, a known table set (or valid explicit base tables) and subsampling.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
from pathlib import Path

import numpy as np

from .qtables import EXTENDED_MAX, TABLE_SETS, BaseTables, mozjpeg_index, scaled_tables

LIBRARY = "mozjpeg403"
MAX_SIDE = 65500  # JPEG_MAX_DIMENSION in libjpeg's jmorecfg.h
JCS_RGB, JCS_YCBCR = 2, 3
# (vertical, horizontal) sampling factors of Y, Cb, Cr.
SAMPLING = {"4:4:4": (1, 1, 1, 1, 1, 1), "4:2:2": (1, 2, 1, 1, 1, 1), "4:2:0": (2, 2, 1, 1, 1, 1)}
# jpeglib's flag masks (_bind.CJpegLib.MASKS): the first says which of the library's defaults to override, the
# second their values. None is overridden: cjpeg's defaults, force_baseline FALSE among them (16-bit tables).
KEEP_DEFAULTS = (0, 0xFFFFFFFF)
# Explicit tables: table 0 for Y, table 1 for both chroma components (jpeg_set_defaults' assignment).
TABLE_OF_COMPONENT = (0, 1, 1)


class MozjpegUnavailable(ValueError):
    """The jpeglib wheel (or its mozjpeg build) is not installed: one line, as bad input is."""


def library_path() -> Path:
    spec = importlib.util.find_spec("jpeglib")
    if spec is None or not spec.submodule_search_locations:
        raise MozjpegUnavailable("mozjpeg needs the jpeglib package: pip install jpeglib")
    folder = Path(next(iter(spec.submodule_search_locations))) / "cjpeglib"
    matches = sorted(folder.glob(f"cjpeglib_{LIBRARY}.*"))
    if not matches:
        raise MozjpegUnavailable(f"jpeglib is installed but has no {LIBRARY} build in {folder}")
    return matches[0]


@functools.cache
def _library() -> ctypes.CDLL:
    if not hasattr(os, "memfd_create"):
        raise MozjpegUnavailable("mozjpeg writes into an anonymous memory file (memfd_create): Linux only")
    library = ctypes.CDLL(str(library_path()))
    function = library.write_jpeg_spatial
    int_p, short_p = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_short)
    function.argtypes = [
        ctypes.c_char_p,  # dstfile
        ctypes.c_void_p,  # rgb samples
        int_p,  # image_dims (height, width)
        int_p,  # (in, out) colour spaces
        int_p,  # (in, out) component counts
        ctypes.c_int,  # dct_method (-1: the library's)
        int_p,  # sampling factors
        ctypes.POINTER(ctypes.c_ushort),  # explicit tables (NULL: scale a built-in set by quality)
        ctypes.c_short,  # quality
        short_p,  # quant_tbl_no
        ctypes.c_short,  # base_quant_tbl_idx
        ctypes.c_short,  # smoothing_factor
        ctypes.c_int,  # num_markers
        int_p,
        int_p,
        ctypes.c_void_p,  # markers
        ctypes.c_int,  # num_scans
        int_p,  # scan_script (NULL: mozjpeg's own)
        short_p,  # huffman_bits
        short_p,  # huffman_values
        ctypes.c_char_p,  # dstfile_uq
        ctypes.c_uint,  # flags to override
        ctypes.c_uint,  # their values
    ]
    function.restype = ctypes.c_int
    return library


def _ints(ctype, values) -> ctypes.Array:
    return (ctype * len(values))(*values)


def encode(
    image: np.ndarray,
    quality: int,
    subsampling: str = "4:2:0",
    tables: str | BaseTables = "imagemagick",
) -> bytes:
    """An HxWx3 uint8 RGB array as the bytes of a mozjpeg JPEG file.

    ``tables`` names one of mozjpeg's built-in sets (:data:`.qtables.TABLE_SETS`) or gives explicit base
    tables, scaled by ``quality`` as libjpeg scales them; low qualities use 16-bit entries as cjpeg does by
    default. A named set is scaled by mozjpeg itself; explicit ones are scaled here the same way and handed
    over as the file's tables.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"mozjpeg: expected HxWx3 uint8, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise ValueError(f"mozjpeg: {width}x{height} pixels; JPEG allows 1..{MAX_SIDE} a side")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"mozjpeg: quality {quality} is outside 1..100")
    if subsampling not in SAMPLING:
        raise ValueError(f"mozjpeg: unknown subsampling {subsampling!r}; choose one of {', '.join(SAMPLING)}")
    if isinstance(tables, str) and tables not in TABLE_SETS:
        raise ValueError(f"mozjpeg: unknown table set {tables!r}; choose one of {', '.join(TABLE_SETS)}")
    explicit = None if isinstance(tables, str) else _explicit_tables(tables, int(quality))
    pixels = np.ascontiguousarray(image)
    library = _library()
    fd = os.memfd_create("shrink-mozjpeg", os.MFD_CLOEXEC)
    try:
        status = library.write_jpeg_spatial(
            f"/proc/self/fd/{fd}".encode(),
            pixels.ctypes.data,
            _ints(ctypes.c_int, (height, width)),
            _ints(ctypes.c_int, (JCS_RGB, JCS_YCBCR)),
            _ints(ctypes.c_int, (3, 3)),
            -1,
            _ints(ctypes.c_int, SAMPLING[subsampling]),
            explicit,
            int(quality),
            None if explicit is None else _ints(ctypes.c_short, TABLE_OF_COMPONENT),
            mozjpeg_index(tables) if explicit is None else -1,
            -1,
            0,
            None,
            None,
            None,
            1,
            None,
            None,
            None,
            None,
            *KEEP_DEFAULTS,
        )
        if status == 0:
            raise OSError("mozjpeg: the encoder could not write its output")
        return _read_all(fd)
    finally:
        os.close(fd)


def _explicit_tables(tables: BaseTables, quality: int) -> ctypes.Array:
    """Explicit base tables scaled to ``quality`` (checked by :func:`.qtables.scaled_tables`), as the
    (luma, chroma) 128 16-bit entries the library's ``qt`` argument takes, natural order."""
    try:
        luma, chroma = scaled_tables(tables, quality, EXTENDED_MAX)
    except ValueError as error:
        raise ValueError(f"mozjpeg: {error}") from None
    return _ints(ctypes.c_ushort, [*luma.ravel().tolist(), *chroma.ravel().tolist()])


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    os.lseek(fd, 0, os.SEEK_SET)
    chunks, left = [], size
    while left > 0:
        chunk = os.read(fd, left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
