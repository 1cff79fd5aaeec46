"""The reference curves shipped as data (CompressAI's published Kodak curves): every file is read, named and
attributed, byte for byte what its README says."""

from __future__ import annotations

import hashlib
import re

import pytest

from shrink.dashboards.references import REFERENCE_FOLDER, REFERENCE_SETS, reference_curves

KODAK = REFERENCE_FOLDER / "compressai-kodak"
EXPECTED = [
    "JPEG (CompressAI, Kodak)",
    "WebP (CompressAI, Kodak)",
    "BPG 4:4:4 (CompressAI, Kodak)",
    "VTM (CompressAI, Kodak)",
    "AV1 (CompressAI, Kodak)",
    "bmshj2018-hyperprior MS-SSIM (CompressAI, Kodak)",
    "mbt2018-mean MS-SSIM (CompressAI, Kodak)",
    "cheng2020-anchor MS-SSIM (CompressAI, Kodak)",
]


def test_compressai_kodak_holds_the_eight_published_curves_with_times():
    curves = reference_curves("compressai-kodak")
    assert list(curves) == EXPECTED and [curve.name for curve in curves.values()] == EXPECTED
    for curve in curves.values():
        rates = [point.bpp for point in curve.points]
        assert len(rates) >= 6 and rates == sorted(rates)
        assert all(0.8 < point.msssim < 1 and 23 < point.psnr < 48 for point in curve.points)
        assert curve.times is not None and len(curve.times) == len(curve.points)
    jpeg = curves["JPEG (CompressAI, Kodak)"].points[0]
    assert (jpeg.bpp, jpeg.msssim) == (0.22115325927734372, 0.8030709524949392)  # the published numbers


def test_every_shipped_file_is_listed_attributed_and_unchanged():
    listed = set(REFERENCE_SETS["compressai-kodak"].labels)
    assert {path.name for path in KODAK.glob("*.json")} == listed
    readme = (KODAK / "README.md").read_text()
    assert "InterDigitalInc/CompressAI" in readme and "BSD 3-Clause Clear" in readme
    assert "InterDigital Communications" in (KODAK / "LICENSE").read_text()
    for name in listed:
        row = re.search(rf"\| `{re.escape(name)}` \|.*\| `([0-9a-f]{{40}})` \| `([0-9a-f]{{64}})` \|", readme)
        assert row, f"{name} has no row (commit, sha256) in the README"
        assert hashlib.sha256((KODAK / name).read_bytes()).hexdigest() == row.group(2), name


def test_an_unknown_reference_set_is_a_value_error():
    with pytest.raises(ValueError, match="no reference set 'kodak'; there are compressai-kodak"):
        reference_curves("kodak")
