"""Images in: folders of any format Pillow reads, or the sample photos shipped inside scikit-image.

Images are kept in memory as uint8 CxHxW tensors (a few dozen photos); training draws random crops and flips
from them with an explicit ``torch.Generator`` so that a resumed run draws exactly the same crops.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import SAMPLES_PREFIX

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif", ".avif"}

# Colour photographs inside the scikit-image wheel (skimage/data). No download ever happens.
# "test" is held out from both (the demo's [test] set); camera.png is grey, read as RGB like any grey file.
SAMPLE_SETS = {
    "train": ["rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg", "retina.jpg"],
    "dev": ["chelsea.png", "coffee.png", "ihc.png"],
    "test": ["astronaut.png", "camera.png"],
}


class ImageLoadError(ValueError):
    """An image file (named in the message) could not be read."""


@dataclass
class NamedImage:
    name: str
    pixels: torch.Tensor  # uint8, 3xHxW

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[-2]), int(self.pixels.shape[-1])


# Grey images of 32-bit integers (I) or floats (F) hold no bit depth: the values say their range
WIDE_MODES = {"I": ("32-bit integer", (255.0, 65535.0)), "F": ("floating-point", (1.0, 255.0))}


def wide_grey(image: Image.Image) -> tuple[np.ndarray, str | None]:
    """A mode I or F image as uint8 grey, scaled from the smallest of its mode's ranges (0..255 or 0..65535
    for integers, 0..1 or 0..255 for floats) that holds every value, and what was done (None for 8-bit
    integers). Values outside every range, negative or not finite are refused (ValueError): no scale fits."""
    kind, peaks = WIDE_MODES[image.mode]
    array = np.asarray(image, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"its {kind} pixels are not all finite (refused)")
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    peak = next((peak for peak in peaks if high <= peak), None)
    if low < 0 or peak is None:
        raise ValueError(
            f"its {kind} pixels run from {low:g} to {high:g}, outside 0..{peaks[-1]:g} "
            "(refused: no scale to 8 bits fits; convert it to 8 or 16 bits)"
        )
    grey = np.round(array / peak * 255.0).astype(np.uint8)
    if (image.mode, peak) == ("I", 255.0):
        return grey, None
    return grey, f"has {kind} pixels: scaled from 0..{peak:g} to 8 bits"


def read_image(path: str | Path) -> torch.Tensor:
    """Read any Pillow image as uint8 RGB 3xHxW, applying its EXIF orientation."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L"):
                array = np.asarray(image, dtype=np.float64)
                peak = 65535.0 if array.max() > 255 else 255.0
                image = Image.fromarray(np.round(array / peak * 255.0).astype(np.uint8), "L")
            elif image.mode in WIDE_MODES:
                image = Image.fromarray(wide_grey(image)[0], "L")
            array = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(f"cannot read image {path}: {error}") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def sample_image_paths(split: str) -> list[Path]:
    from skimage import data as skdata

    if split not in SAMPLE_SETS:
        raise ImageLoadError(f"unknown sample set {split!r}; choose one of {sorted(SAMPLE_SETS)}")
    return [Path(skdata.data_dir) / name for name in SAMPLE_SETS[split]]


def image_paths(source: str | Path) -> list[Path]:
    """Image files of a folder (sorted), or the embedded sample set for ``samples:train|dev|test``."""
    text = str(source)
    if text.startswith(SAMPLES_PREFIX):
        return sample_image_paths(text.removeprefix(SAMPLES_PREFIX))
    folder = Path(text)
    if not folder.is_dir():
        raise ImageLoadError(f"image folder not found: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise ImageLoadError(f"no images in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths


def load_images(source: str | Path, limit: int | None = None) -> list[NamedImage]:
    paths = image_paths(source)[:limit]
    return [NamedImage(path.name, read_image(path)) for path in paths]


def fingerprint_images(source: str | Path, limit: int | None = None) -> str:
    """sha256 (hex) over the names and bytes of the files :func:`load_images` would read, in its order."""
    digest = hashlib.sha256()
    for path in image_paths(source)[:limit]:
        try:
            content = path.read_bytes()
        except OSError as error:
            raise ImageLoadError(f"cannot read image {path}: {error}") from None
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()


def center_crop(pixels: torch.Tensor, max_side: int, multiple: int = 1) -> torch.Tensor:
    """The centre of ``pixels``, each side at most ``max_side`` and cut down to a multiple of ``multiple``."""
    height, width = pixels.shape[-2:]
    new_h, new_w = min(height, max_side), min(width, max_side)
    new_h, new_w = max(new_h - new_h % multiple, 1), max(new_w - new_w % multiple, 1)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    return pixels[..., top : top + new_h, left : left + new_w]


def pad_to_crop(pixels: torch.Tensor, crop: int, name: str) -> torch.Tensor:
    """Reflect-pad an image smaller than the crop (with a warning) so a crop can be drawn from it."""
    height, width = pixels.shape[-2:]
    if height >= crop and width >= crop:
        return pixels
    warnings.warn(f"{name} is {width}x{height}, smaller than the {crop}px crop: padded", stacklevel=2)
    pad_h, pad_w = max(0, crop - height), max(0, crop - width)
    padded = F.pad(pixels[None].float(), (0, pad_w, 0, pad_h), mode="replicate")
    return padded[0].to(torch.uint8)


class CropSampler:
    """Random crops with random horizontal/vertical flips, drawn with its own generator."""

    def __init__(self, images: list[NamedImage], crop: int, seed: int):
        if not images:
            raise ImageLoadError("no training images")
        self.crop = crop
        self.images = [pad_to_crop(image.pixels, crop, image.name) for image in images]
        self.generator = torch.Generator().manual_seed(seed)

    def _draw(self, maximum: int) -> int:
        return int(torch.randint(0, maximum, (1,), generator=self.generator))

    def sample(self, batch_size: int) -> torch.Tensor:
        """A float batch Bx3xCxC in [0, 1]."""
        return self.sample_uint8(batch_size).float() / 255.0

    def sample_uint8(self, batch_size: int) -> torch.Tensor:
        """A batch Bx3xCxC as the images store it (uint8): a quarter of the bytes to pin and copy."""
        crops = []
        for _ in range(batch_size):
            pixels = self.images[self._draw(len(self.images))]
            height, width = pixels.shape[-2:]
            top, left = self._draw(height - self.crop + 1), self._draw(width - self.crop + 1)
            crop = pixels[:, top : top + self.crop, left : left + self.crop]
            if self._draw(2):
                crop = crop.flip(-1)
            if self._draw(2):
                crop = crop.flip(-2)
            crops.append(crop)
        return torch.stack(crops)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
