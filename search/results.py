"""Plain data about a study's results (no printing, no plotting): the Pareto front against JPEG."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from shrink.compression.metrics import msssim_from_db
from shrink.compression.rd import RDCurve, metric_at_rate

from .records import TrialResult, read_trial_result, stored_rd_point


class FrontRow(TrialResult):
    """A front trial's result beside JPEG: ``rate_change`` is None for trials stored before it."""

    jpeg_msssim: float  # the dev JPEG curve's MS-SSIM at the same bpp (PCHIP on log-rate)


def completed_points(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if stored_rd_point(t)]


def front_rows(study: optuna.Study, dev_jpeg: RDCurve) -> list[FrontRow]:
    """The Pareto front's trials (best trial for one objective), by bpp, each beside JPEG at its bpp; the gain
    is the one the trial stored (what its objective, pruner and report used), not recomputed here. In a study
    that minimises the decoder's cost too, the front is Optuna's over all three objectives."""
    if not completed_points(study):
        return []
    rows = []
    for trial in study.best_trials:
        result = read_trial_result(trial)
        jpeg_db = metric_at_rate(dev_jpeg, result.bpp, "msssim_db")
        rows.append(FrontRow(**dict(result), jpeg_msssim=msssim_from_db(jpeg_db)))
    return sorted(rows, key=lambda row: row.bpp)


def format_front(rows: list[FrontRow]) -> str:
    """A text table; a rate column when any row recorded its dev rate, a decoder MACs/px column when any row
    recorded its decoder's cost."""
    rates = any(r.rate_change is not None for r in rows)
    macs = any(r.decoder_macs_per_pixel is not None for r in rows)
    lines = [
        f"{'trial':>5} {'bpp':>7} {'MS-SSIM':>8} {'JPEG @bpp':>9} {'gain dB':>8}"
        + (f" {'rate vs JPEG':>12}" if rates else "")
        + (" dec MACs/px" if macs else "")
    ]
    lines += [
        f"{r.number:5d} {r.bpp:7.4f} {r.msssim:8.4f} {r.jpeg_msssim:9.4f} {r.gain_db:+8.3f}"
        + (f" {format_rate(r.rate_change):>12}" if rates else "")
        + (f" {format_macs(r.decoder_macs_per_pixel):>11}" if macs else "")
        for r in rows
    ]
    return "\n".join(lines)


def format_macs(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def format_rate(change: float | None) -> str:
    return "-" if change is None else f"{100 * change:+.2f}%"
