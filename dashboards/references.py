"""Curves from elsewhere, drawn beside ours by ``shrink report``: the user's ``--curves`` files (our curve
JSON or CompressAI's results JSON) and reference sets shipped as data (``--reference``).

The one shipped set, ``compressai-kodak``, is CompressAI's published Kodak curves, copied verbatim into
``reference-curves/compressai-kodak/`` with their source, commits and licence (README.md and LICENSE there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shrink.compression.rd import RDCurve, load_curves

REFERENCE_FOLDER = Path(__file__).parent / "reference-curves"  # a folder per set, named as the set


@dataclass(frozen=True)
class ReferenceSet:
    source: str  # appended to each legend label
    labels: dict[str, str]  # file -> legend label


REFERENCE_SETS = {
    "compressai-kodak": ReferenceSet(
        "CompressAI, Kodak",
        {
            "jpeg.json": "JPEG",
            "webp.json": "WebP",
            "bpg_444_x265_ycbcr.json": "BPG 4:4:4",
            "vtm.json": "VTM",
            "av1.json": "AV1",
            "compressai-bmshj2018-hyperprior_ms-ssim_cpu.json": "bmshj2018-hyperprior MS-SSIM",
            "compressai-mbt2018-mean_ms-ssim_cpu.json": "mbt2018-mean MS-SSIM",
            "compressai-cheng2020-anchor_ms-ssim_cpu.json": "cheng2020-anchor MS-SSIM",
        },
    )
}


def renamed(curve: RDCurve, name: str) -> RDCurve:
    return RDCurve(name, curve.points, curve.per_image, curve.times)


def reference_curves(name: str) -> dict[str, RDCurve]:
    """The curves of the shipped reference set ``name``, each named by its legend label and source, e.g.
    "JPEG (CompressAI, Kodak)"."""
    if name not in REFERENCE_SETS:
        raise ValueError(f"no reference set {name!r}; there are {', '.join(REFERENCE_SETS)}")
    reference = REFERENCE_SETS[name]
    curves = {}
    for file, label in reference.labels.items():
        [curve] = load_curves(REFERENCE_FOLDER / name / file).values()
        curves[f"{label} ({reference.source})"] = renamed(curve, f"{label} ({reference.source})")
    return curves


def get_extra_curves_info(files: Sequence[Path], references: Sequence[str]) -> dict[str, RDCurve]:
    """Every curve of ``files`` (named "CURVE (FILE NAME)", so a legend says where it came from), then the
    curves of each reference set; a malformed file is a ValueError naming it, a missing one is
    FileNotFoundError."""
    curves: dict[str, RDCurve] = {}
    for path in files:
        for name, curve in load_curves(path).items():
            curves[f"{name} ({Path(path).name})"] = renamed(curve, f"{name} ({Path(path).name})")
    for reference in references:
        curves |= reference_curves(reference)
    return curves
