"""The shrink file: a standard JPEG of the compact image, with what decompression needs in an APP11 segment.

Any viewer opens the file and shows the compact image (1/ratio of the original size). The segment is
``FF EB <length> "SHRINK\\0" <compact JSON>``; the JSON holds the format version, the original width and
height, the ratio, the JPEG quality, the sha256 identity of the bundle that made the file and a CRC-32 that
binds the header to its data: it covers the JPEG without the segment and the header's own JSON with an empty
``crc32`` (a truncated or altered file, or an altered header, is refused even where Pillow would still
decode it). Format 1's CRC covered the JPEG alone; such files are refused in one line.
It sits right after SOI, or after the JFIF APP0 segment when the JPEG starts with one (JFIF wants APP0 first).
Decoders skip APPn segments they do not know, so the pixels decode exactly as those of the bare JPEG; the
rate of a file is its whole ``len()``, the segment included.

Inputs (:func:`read_photo`) are any image Pillow reads: EXIF orientation applied, alpha composited on white
(a JPEG has no transparency, and the colour under transparent pixels is undefined, often black), 16-bit
greyscale scaled from its full 0..65535 range, 32-bit integer and float greyscale scaled from the range their
values imply (with a note; values beyond any range refused), CMYK converted without colour management (with
a warning), only the first frame of an animation or multi-page file (with a note), and images over
``PIL.Image.MAX_IMAGE_PIXELS`` refused as decompression bombs.
"""

from __future__ import annotations

import io
import json
import re
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .codecs import Codec
from .config import format_validation_error
from .data import WIDE_MODES, ImageLoadError, read_image, wide_grey
from .files import UnreadableFile, check_regular
from .text import LINE_LIMIT, plain_text

FORMAT = "shrink-jpeg/2"
MAGIC = b"SHRINK\0"
SOI, EOI = b"\xff\xd8", b"\xff\xd9"
APP0, APP11, SOS = 0xE0, 0xEB, 0xDA
MAX_SEGMENT_PAYLOAD = 65533
MAX_FILE_BYTES = 1 << 30  # a shrink file: the JPEG of a compact image within Pillow's pixel limit is far less
MAX_IMAGE_FILE_BYTES = 4 << 30  # an input image (Pillow's pixel limit refuses larger images after the header)
FORMAT_PATTERN = re.compile(r"^shrink-jpeg/\d+$")


class ContainerError(ValueError):
    """A file that is not a shrink file, is truncated or corrupt, or does not fit its header."""


class Header(BaseModel):
    """What decompression needs, stored in the file's APP11 segment as compact JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["shrink-jpeg/2"] = FORMAT
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    ratio: int = Field(ge=1, le=4)
    quality: int = Field(ge=1, le=100)
    bundle: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 identity of the bundle")
    crc32: str = Field("", pattern=r"^([0-9a-f]{8})?$", description="of the header and the JPEG (wrap)")

    @property
    def compact_size(self) -> tuple[int, int]:
        """(height, width) of the compact image: the original padded to a multiple of the ratio, divided."""
        return -(-self.height // self.ratio), -(-self.width // self.ratio)


# ---------------------------------------------------------------- writing


def segment(header: Header) -> bytes:
    """The APP11 segment holding ``header``: marker, big-endian length, magic, JSON."""
    payload = MAGIC + header.model_dump_json().encode()
    if len(payload) > MAX_SEGMENT_PAYLOAD:  # pragma: no cover - a header is ~170 bytes
        raise ContainerError(f"header of {len(payload)} bytes does not fit a JPEG segment")
    return bytes([0xFF, APP11]) + (len(payload) + 2).to_bytes(2, "big") + payload


def wrap(jpeg: bytes, header: Header) -> bytes:
    """The JPEG file ``jpeg`` with the header (and jpeg's CRC-32) inserted after SOI and a leading APP0."""
    if not jpeg.startswith(SOI):
        raise ContainerError("not a JPEG stream (no SOI marker)")
    header = header.model_copy(update={"crc32": _bound_crc32(jpeg, header)})
    at = 2
    first = next(_segments(jpeg), None)
    if first is not None and first[0] == APP0:
        at = first[2]
    return jpeg[:at] + segment(header) + jpeg[at:]


def encode(compact: np.ndarray, codec: Codec, header: Header) -> bytes:
    """The shrink file of an HxWx3 uint8 compact image at ``header.quality`` with the codec's settings."""
    return wrap(codec.encode(compact, header.quality), header)


def highest_quality_within(budget: int, encode_at: Callable[[int], bytes]) -> tuple[int, bytes]:
    """(quality, file) of the highest quality in 1..100 whose file takes at most ``budget`` bytes.

    Binary search keeping ``low`` within and ``high`` over the budget, so the answer's ``quality + 1`` is over
    it even where file size is not monotone in quality. Quality 1 over the budget raises ``ValueError``.
    """
    files: dict[int, bytes] = {}

    def fits(quality: int) -> bool:
        files[quality] = encode_at(quality)
        return len(files[quality]) <= budget

    low, high = 1, 100
    if not fits(low):
        raise ValueError(f"even quality 1 takes {len(files[low])} bytes, over the budget of {budget} bytes")
    if fits(high):
        return high, files[high]
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low, files[low]


# ---------------------------------------------------------------- reading


def _segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, payload start, payload end) of each segment after SOI, up to the first SOS."""
    pos = 2
    while True:
        if pos + 4 > len(data):
            raise ContainerError("truncated: the JPEG ends inside its headers")
        if data[pos] != 0xFF:
            raise ContainerError(f"corrupt JPEG: no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (SOS, EOI[1]):
            return
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if end > len(data) or end < pos + 4:
            raise ContainerError("truncated: the JPEG ends inside its headers")
        yield marker, pos + 4, end
        pos = end


def _bound_crc32(jpeg: bytes, header: Header) -> str:
    """CRC-32 of the JPEG (without the segment) and the header's JSON with an empty ``crc32``."""
    fields = header.model_copy(update={"crc32": ""}).model_dump_json().encode()
    return f"{zlib.crc32(fields, zlib.crc32(jpeg)):08x}"


def read_header(data: bytes) -> Header:
    """The header of a shrink file; :class:`ContainerError` for a foreign, truncated or corrupt file."""
    if not data.startswith(SOI):
        raise ContainerError("not a shrink file: not a JPEG (no SOI marker)")
    span = next(
        ((s, e) for marker, s, e in _segments(data) if marker == APP11 and data[s:e].startswith(MAGIC)), None
    )
    if span is None:
        raise ContainerError("not a shrink file: a JPEG without the SHRINK APP11 segment")
    if not data.endswith(EOI):
        raise ContainerError("truncated: the JPEG has no end-of-image marker")
    start, end = span
    header = _parse_header(data[start + len(MAGIC) : end])
    if _bound_crc32(data[: start - 4] + data[end:], header) != header.crc32:
        raise ContainerError("truncated or corrupt: header or JPEG does not match the CRC-32 in its header")
    return header


def _parse_header(text: bytes) -> Header:
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError):
        raise ContainerError("corrupt shrink header: not valid JSON") from None
    found = fields.get("format") if isinstance(fields, dict) else None
    if isinstance(found, str) and FORMAT_PATTERN.match(found) and found != FORMAT:
        raise ContainerError(
            f"file format {plain_text(found)} is not supported (this shrink reads {FORMAT}): compress the "
            "original again"
        )
    try:
        return Header.model_validate(fields)
    except ValidationError as error:  # it names the file's fields: bounded, as the format is
        problem = plain_text(format_validation_error(error), LINE_LIMIT)
        raise ContainerError(f"corrupt shrink header: {problem}") from None


def decode_compact(data: bytes, header: Header) -> np.ndarray:
    """The compact image of a shrink file as HxWx3 uint8 (as :meth:`Codec.decode` decodes it)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "JPEG":
                raise ContainerError(f"not a shrink file: Pillow reads it as {image.format}")
            array = np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as error:
        if isinstance(error, ContainerError):
            raise
        raise ContainerError(f"truncated or corrupt JPEG: {error}") from None
    if array.shape[:2] != header.compact_size:
        raise ContainerError(
            f"corrupt: the JPEG is {array.shape[1]}x{array.shape[0]}, the header implies "
            f"{header.compact_size[1]}x{header.compact_size[0]}"
        )
    return array


# ---------------------------------------------------------------- images in


@dataclass
class Photo:
    pixels: torch.Tensor  # uint8 3xHxW, upright
    notes: list[str] = field(default_factory=list)  # "note: ..." / "warning: ..." lines for the user

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[-2]), int(self.pixels.shape[-1])


def check_pixels(width: int, height: int, what: str) -> None:
    """Refuse ``width`` x ``height`` over Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise ImageLoadError(
            f"{what}: {width}x{height} = {width * height} pixels is over the decompression-bomb limit of "
            f"{limit} (PIL.Image.MAX_IMAGE_PIXELS): refused"
        )


def read_photo(path: str | Path) -> Photo:
    """Any Pillow image as upright uint8 RGB 3xHxW, with notes on what was converted (see the module doc)."""
    path = Path(path)
    try:
        check_regular(path, MAX_IMAGE_FILE_BYTES, "image")  # Pillow would block on a FIFO
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, in one line
            image = Image.open(path)
        with image:
            check_pixels(image.width, image.height, str(path))
            frames = _frame_notes(image, path)
            if image.mode.startswith("I;16") or image.mode in WIDE_MODES or image.has_transparency_data:
                photo = _converted(ImageOps.exif_transpose(image), path)
            else:
                photo = Photo(read_image(path), _plain_notes(image, path))
            return Photo(photo.pixels, frames + photo.notes)
    except ImageLoadError:
        raise
    except UnreadableFile as error:
        raise ImageLoadError(str(error)) from None
    except Image.DecompressionBombError as error:
        raise ImageLoadError(f"{path}: refused as a decompression bomb: {error}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(f"cannot read image {path}: {error}") from None


def _frame_notes(image: Image.Image, path: Path) -> list[str]:
    frames = getattr(image, "n_frames", 1)  # an animated GIF or WebP, a multi-page TIFF
    return [f"note: {path} has {frames} frames: only the first is read"] if frames > 1 else []


def _plain_notes(image: Image.Image, path: Path) -> list[str]:
    if image.mode == "CMYK":
        return [f"warning: {path} is CMYK: converted to RGB without colour management"]
    return []


def _converted(image: Image.Image, path: Path) -> Photo:
    """16-bit greyscale (scaled from 0..65535), 32-bit integer or float greyscale (:func:`wide_grey`) and
    images with alpha (composited on white)."""
    if image.mode.startswith("I;16"):
        grey = np.round(np.asarray(image, dtype=np.float64) / 65535.0 * 255.0).astype(np.uint8)
        array = np.repeat(grey[..., None], 3, axis=2)
        notes = [f"note: {path} is 16-bit: reduced to 8 bits"]
    elif image.mode in WIDE_MODES:
        grey, note = wide_grey(image)
        array = np.repeat(grey[..., None], 3, axis=2)
        notes = [f"note: {path} {note}"] if note else []
    else:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        array = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
        opaque = int(np.asarray(rgba)[..., 3].min()) == 255
        notes = [] if opaque else [f"note: {path} has transparency: composited on white"]
    return Photo(torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous(), notes)
