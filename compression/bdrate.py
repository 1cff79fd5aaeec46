"""Bjøntegaard delta rate: the mean rate difference between two RD curves at equal quality.

log(rate) is interpolated as a function of quality with PCHIP (monotone, no overshoot; the variant used by
VCEG/JVET tools and CompressAI) and integrated exactly over the qualities both curves reach.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator

from .rd import RDCurve, efficient_points

MIN_OVERLAP_DB = 0.25  # a BD-rate over a narrower common quality range is noise: n/a


def _frontier(
    rates: Sequence[float], qualities: Sequence[float], label: str
) -> tuple[np.ndarray, np.ndarray]:
    """(quality, log rate) of the :func:`rd.efficient_points`, both strictly increasing."""
    rates = np.asarray(rates, dtype=np.float64)
    qualities = np.asarray(qualities, dtype=np.float64)
    if rates.shape != qualities.shape or rates.ndim != 1:
        raise ValueError(f"{label}: rates and qualities must be 1-D and of equal length")
    if not (np.all(np.isfinite(rates)) and np.all(np.isfinite(qualities))):
        raise ValueError(f"{label}: rates and qualities must be finite")
    if np.any(rates <= 0):
        raise ValueError(f"{label}: rates must be positive")
    kept_r, kept_q = efficient_points(rates, qualities)
    if len(kept_q) < 2:
        raise ValueError(f"{label}: need 2 or more points of increasing quality (got {len(kept_q)})")
    return kept_q, np.log(kept_r)


def bd_rate(
    anchor_bpp: Sequence[float],
    anchor_quality: Sequence[float],
    test_bpp: Sequence[float],
    test_quality: Sequence[float],
) -> float:
    """BD-rate of ``test`` against ``anchor`` in percent; negative means the test needs fewer bits."""
    anchor_q, anchor_log_r = _frontier(anchor_bpp, anchor_quality, "anchor")
    test_q, test_log_r = _frontier(test_bpp, test_quality, "test")
    overlap = _overlap(anchor_q, test_q)
    if overlap is None:
        raise ValueError(
            f"no quality overlap: anchor spans [{anchor_q[0]:.4g}, {anchor_q[-1]:.4g}], "
            f"test spans [{test_q[0]:.4g}, {test_q[-1]:.4g}]"
        )
    low, high = overlap
    anchor_area = PchipInterpolator(anchor_q, anchor_log_r).integrate(low, high)
    test_area = PchipInterpolator(test_q, test_log_r).integrate(low, high)
    try:
        return (math.exp((test_area - anchor_area) / (high - low)) - 1.0) * 100.0
    except OverflowError:  # rates of absurd scale (1e-300 against 1e300 bpp): a user error, not a traceback
        raise ValueError("the test needs over e^709 times the anchor's rate: check the curves' bpp") from None


def _overlap(anchor_q: np.ndarray, test_q: np.ndarray) -> tuple[float, float] | None:
    low, high = max(anchor_q[0], test_q[0]), min(anchor_q[-1], test_q[-1])
    return (float(low), float(high)) if high > low else None


def quality_overlap(anchor: RDCurve, test: RDCurve, metric: str = "msssim_db") -> tuple[float, float] | None:
    """The qualities a BD-rate of the two curves averages over: where both reach (None: nowhere, no BD-rate).
    A curve that covers only part of the other's range is judged there alone (a codec of low rates against
    JPEG's worst ones)."""
    anchor_q, _ = _frontier(*anchor.values(metric), f"anchor {anchor.name!r}")
    test_q, _ = _frontier(*test.values(metric), f"test {test.name!r}")
    return _overlap(anchor_q, test_q)


def too_little_overlap(anchor: RDCurve, test: RDCurve, metric: str) -> str | None:
    """Why the curves share too little quality for a BD-rate (under :data:`MIN_OVERLAP_DB` of
    :func:`quality_overlap`, or none), or None. The one rule of ``shrink bdrate``, ``shrink export --family``
    and the report; raises ValueError for a curve of too few points."""
    overlap = quality_overlap(anchor, test, metric)
    width = 0.0 if overlap is None else overlap[1] - overlap[0]
    return None if width >= MIN_OVERLAP_DB else f"quality overlap {width:.2f} dB < {MIN_OVERLAP_DB} dB"


def safe_bd_rate(anchor: RDCurve, test: RDCurve, metric: str) -> tuple[float | None, str | None]:
    """(BD-rate, None), or (None, why) when it is n/a: too little common quality (:func:`too_little_overlap`),
    too few points, rates out of range."""
    try:
        why = too_little_overlap(anchor, test, metric)
        if why is not None:
            return None, why
        value = bd_rate_curves(anchor, test, metric)
    except ValueError as error:
        return None, str(error).split(": ", 1)[-1]
    return (value, None) if math.isfinite(value) else (None, "not finite")


def bd_rate_curves(anchor: RDCurve, test: RDCurve, metric: str = "msssim_db") -> float:
    """:func:`bd_rate` of two curves with ``metric`` ("msssim_db" or "psnr") as the quality axis."""
    if metric not in ("msssim_db", "psnr", "msssim"):
        raise ValueError(f"unknown metric {metric!r}; use 'msssim_db' or 'psnr'")
    anchor_bpp, anchor_quality = anchor.values(metric)
    test_bpp, test_quality = test.values(metric)
    try:
        return bd_rate(anchor_bpp, anchor_quality, test_bpp, test_quality)
    except ValueError as error:
        raise ValueError(f"BD-rate of {test.name!r} vs {anchor.name!r} in {metric}: {error}") from None
