"""Plain data about a study's results (no printing, no plotting): the Pareto front against JPEG."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from shrink.compression.metrics import msssim_from_db
from shrink.compression.rd import RDCurve, metric_at_rate

from .study import DECODER_MACS_ATTR


@dataclass
class FrontRow:
    trial: int
    bpp: float
    msssim: float
    jpeg_msssim: float  # the dev JPEG curve's MS-SSIM at the same bpp (PCHIP on log-rate)
    gain_db: float  # the trial's stored dev_gain_db (rd.operating_gain: at one quality, dB over JPEG@bpp)
    params: dict
    decoder_macs_per_pixel: float | None = None  # the trial's decoder cost, when it recorded one
    rate_change: float | None = None  # the stored dev_rate_change (rd.operating_rate_change); None before it


def completed_points(study: optuna.Study) -> list[FrozenTrial]:
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("rd_point")
    ]


def front_rows(study: optuna.Study, dev_jpeg: RDCurve) -> list[FrontRow]:
    """The Pareto front's trials (best trial for one objective), by bpp, each beside JPEG at its bpp; the gain
    is the one the trial stored (what its objective, pruner and report used), not recomputed here. In a study
    that minimises the decoder's cost too, the front is Optuna's over all three objectives."""
    if not completed_points(study):
        return []
    rows = []
    for trial in study.best_trials:
        point = trial.user_attrs["rd_point"]
        jpeg_db = metric_at_rate(dev_jpeg, point["dev_bpp"], "msssim_db")
        rows.append(
            FrontRow(
                trial=trial.number,
                bpp=point["dev_bpp"],
                msssim=point["dev_msssim"],
                jpeg_msssim=msssim_from_db(jpeg_db),
                gain_db=float(point["dev_gain_db"]),
                params=dict(trial.params),
                decoder_macs_per_pixel=_optional_float(trial.user_attrs.get(DECODER_MACS_ATTR)),
                rate_change=_optional_float(point.get("dev_rate_change")),
            )
        )
    return sorted(rows, key=lambda row: row.bpp)


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


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
        f"{r.trial:5d} {r.bpp:7.4f} {r.msssim:8.4f} {r.jpeg_msssim:9.4f} {r.gain_db:+8.3f}"
        + (f" {format_rate(r.rate_change):>12}" if rates else "")
        + (f" {format_macs(r.decoder_macs_per_pixel):>11}" if macs else "")
        for r in rows
    ]
    return "\n".join(lines)


def format_macs(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def format_rate(change: float | None) -> str:
    return "-" if change is None else f"{100 * change:+.2f}%"
