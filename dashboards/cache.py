"""A JSON cache of RD curves that cost minutes to measure (baselines, bundle evaluations).

One file (by default ``REPORT.cache.json`` beside the report) maps a key to a curve. A key names what was
measured: the kind of curve plus a sha256 fingerprint of everything the measurement depends on (image names
and pixels, quality grid, codec settings, bundle identity), so a changed image set or bundle never reuses a
stale curve and nothing has to be invalidated by hand. Deleting the file only costs the recomputation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from shrink.compression.data import NamedImage
from shrink.compression.files import atomic_write_text
from shrink.compression.rd import RDCurve

CACHE_FORMAT = "shrink-report-cache/1"


def images_fingerprint(images: Sequence[NamedImage]) -> str:
    """sha256 over every image's name, size and pixels (order matters: curves average in order)."""
    digest = hashlib.sha256()
    for image in images:
        digest.update(f"{image.name}:{image.size}\n".encode())
        digest.update(image.pixels.contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_key(kind: str, *parts: Any) -> str:
    """``kind:sha256(json(parts))``: readable kind, exact contents."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return f"{kind}:{hashlib.sha256(text.encode()).hexdigest()[:32]}"


class CurveCache:
    """``get_or_compute(key, compute)``; ``path=None`` keeps everything in memory (no file)."""

    def __init__(self, path: str | Path | None):
        self.path = None if path is None else Path(path)
        self.curves: dict[str, RDCurve] = self._read()
        self.hits: list[str] = []
        self.misses: list[str] = []

    def _read(self) -> dict[str, RDCurve]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except ValueError:
            return {}  # a damaged cache is only a slower report
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            return {}
        return {key: RDCurve.from_dict(curve) for key, curve in data.get("curves", {}).items()}

    def _write(self) -> None:
        if self.path is None:
            return
        payload = {"format": CACHE_FORMAT, "curves": {k: c.to_dict() for k, c in self.curves.items()}}
        atomic_write_text(self.path, json.dumps(payload, allow_nan=True))

    def get_or_compute(self, key: str, compute: Callable[[], RDCurve]) -> RDCurve:
        if key in self.curves:
            self.hits.append(key)
            return self.curves[key]
        self.misses.append(key)
        self.curves[key] = curve = compute()
        self._write()
        return curve

    def many(self, keys: Iterable[tuple[str, str]], compute: Callable[[str], RDCurve]) -> dict[str, RDCurve]:
        """``{name: curve}`` for ``(name, key)`` pairs, computing each missing one with ``compute(name)``."""
        return {name: self.get_or_compute(key, lambda n=name: compute(n)) for name, key in keys}
