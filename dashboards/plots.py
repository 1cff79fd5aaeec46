"""Plotly figures of the report, each drawn from the plain data of study_info and curves (no reading here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from shrink.compression.rd import RDCurve
from shrink.compression.text import LINE_LIMIT
from shrink.search.spec import DECODER_COST_METRIC

from .html import plotly_label
from .study_info import (
    HypervolumeInfo,
    ImportanceInfo,
    LearningCurve,
    ObjectiveFrontInfo,
    ObjectivePoint,
    PruningSavings,
    TrialPoint,
)

METRIC_LABELS = {"msssim": "MS-SSIM", "msssim_db": "MS-SSIM (dB)", "psnr": "PSNR (dB)"}
CURVE_COLORS = {
    "jpeg": "#1f77b4",
    "mozjpeg": "#aec7e8",
    "webp": "#9467bd",
    "avif": "#8c564b",
    "jpegli": "#17becf",
    "jpegxl": "#bcbd22",
}
DOWNSCALE_COLOR = "#2ca02c"
EXTRA_COLORS = ("#ff7f0e", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
# curves from elsewhere (--curves, --reference): dark shades, apart from the baselines' and bundles' colours
EXTRA_CURVE_COLORS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")
TRIAL_COLOR = "#8a8a8a"
FRONT_COLOR = "#d62728"
HEIGHT = 460
HEIGHT_3D = 640
OBJECTIVE_LABELS = {  # the study's metric names (spec.OBJECTIVE_MODES and the decoder cost) as axis labels
    "dev_bpp": "dev bpp",
    "dev_msssim": "dev MS-SSIM",
    "dev_gain_db": "dev gain over JPEG (dB)",
    "dev_rate_change": "dev rate vs JPEG",
    DECODER_COST_METRIC: "decoder MACs/px",
}


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str, **extra) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        title={"text": title, "x": 0.01},
        height=HEIGHT,
        margin={"l": 70, "r": 20, "t": 50, "b": 55},
        xaxis_title=x_title,
        yaxis_title=y_title,
        legend={"bgcolor": "rgba(255,255,255,0.75)"},
        hovermode="closest",
        **extra,
    )
    return fig


def curve_color(name: str, index: int) -> str:
    if name in CURVE_COLORS:
        return CURVE_COLORS[name]
    if name.startswith("down"):
        return DOWNSCALE_COLOR
    return EXTRA_COLORS[index % len(EXTRA_COLORS)]


def curve_trace(curve: RDCurve, metric: str, color: str, dash: str = "solid") -> go.Scatter:
    bpp, values = curve.values(metric)
    name = plotly_label(curve.name)
    # the name goes in as data, never into the template, where "%{...}" in it would be read as a field
    hover_names = [name if p.quality is None else f"{name} q{p.quality}" for p in curve.points]
    return go.Scatter(
        x=bpp,
        y=values,
        mode="lines+markers",
        name=name,
        line={"color": color, "dash": dash, "width": 2},
        marker={"size": 4},
        customdata=hover_names,
        hovertemplate=f"%{{customdata}}<br>bpp %{{x:.4f}}<br>{METRIC_LABELS[metric]} %{{y:.4f}}"
        "<extra></extra>",
    )


def add_extra_curves(fig: go.Figure, curves: Mapping[str, RDCurve] | None, metric: str) -> None:
    """Curves from elsewhere (``--curves`` files, ``--reference`` sets): thin dashed lines and open markers,
    drawn under ours and listed after them in the legend."""
    for index, curve in enumerate((curves or {}).values()):
        trace = curve_trace(curve, metric, EXTRA_CURVE_COLORS[index % len(EXTRA_CURVE_COLORS)], dash="dash")
        trace.update(line={"width": 1.5}, marker={"size": 5, "symbol": "circle-open"}, legendrank=2000)
        fig.add_trace(trace)


def format_params(params: Mapping) -> str:
    def value(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else plotly_label(v)

    return "<br>".join(f"{plotly_label(name)} = {value(v)}" for name, v in params.items())


def trial_hover(point: TrialPoint) -> str:
    return (
        f"<b>trial {point.number}</b>{' (Pareto front)' if point.on_front else ''}<br>bpp {point.bpp:.4f}, "
        f"MS-SSIM {point.msssim:.4f} ({point.msssim_db:.2f} dB), PSNR {point.psnr:.2f} dB<br>"
        f"gain over JPEG {point.gain_db:+.3f} dB<br>"
        + (
            f"decoder {point.decoder_macs_per_pixel:,.0f} MACs/px<br>"
            if point.decoder_macs_per_pixel is not None
            else ""
        )
        + format_params(point.params)
    )


def trial_trace(points: Sequence[TrialPoint], metric: str, front: bool) -> go.Scatter:
    chosen = sorted((p for p in points if p.on_front == front), key=lambda p: (p.bpp, p.number))
    return go.Scatter(
        x=[p.bpp for p in chosen],
        y=[getattr(p, metric) for p in chosen],
        mode="lines+markers" if front else "markers",
        name="Pareto front" if front else "trials",
        marker={
            "size": 11 if front else 8,
            "color": FRONT_COLOR if front else TRIAL_COLOR,
            "symbol": "star" if front else "circle",
            "line": {"width": 1, "color": "white"},
        },
        line={"color": FRONT_COLOR, "width": 2},
        hovertext=[trial_hover(p) for p in chosen],
        hoverinfo="text",
    )


def objective_trace(points: Sequence[ObjectivePoint], front: bool) -> go.Scatter3d:
    """The front's trials (red diamonds) or the others (grey), at their objective values; hover as in the
    RD plots (trial number, RD point, decoder cost, params)."""
    chosen = [p for p in points if p.on_front == front]
    x, y, z = ([p.values[axis] for p in chosen] for axis in range(3))
    return go.Scatter3d(
        x=x,
        y=y,
        z=z,
        mode="markers",
        name="Pareto front" if front else "trials",
        marker={
            "size": 6 if front else 4,
            "color": FRONT_COLOR if front else TRIAL_COLOR,
            "symbol": "diamond" if front else "circle",
        },
        hovertext=[trial_hover(p) for p in chosen],
        hoverinfo="text",
    )


def axis_title(name: str, direction: str) -> str:
    label = OBJECTIVE_LABELS.get(name) or plotly_label(name)
    return f"{label} ({'lower' if direction == 'minimize' else 'higher'} is better)"


def front_3d_figure(info: ObjectiveFrontInfo) -> go.Figure:
    """The completed trials in the space of the study's three objectives, the Pareto front highlighted
    (drag to turn it, scroll to zoom)."""
    fig = go.Figure([objective_trace(info.points, front=False), objective_trace(info.points, front=True)])
    x_title, y_title, z_title = map(axis_title, info.names, info.directions)
    n_front = sum(p.on_front for p in info.points)
    title = f"Pareto front in three objectives: {n_front} of {len(info.points)} trials"
    return fig.update_layout(
        template="plotly_white",
        title={"text": title, "x": 0.01},
        height=HEIGHT_3D,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        scene={
            "xaxis_title": x_title,
            "yaxis_title": y_title,
            "zaxis_title": z_title,
            "camera": {"eye": {"x": 1.6, "y": 1.6, "z": 0.9}},  # far enough that the axis titles fit
        },
        legend={"bgcolor": "rgba(255,255,255,0.75)"},
    )


def _visible_range(fig: go.Figure, x_min: float, x_max: float) -> list[float] | None:
    """A y range covering every point with x_min <= bpp <= x_max (autorange would use hidden points too)."""
    ys = [y for trace in fig.data for x, y in zip(trace.x, trace.y, strict=True) if x_min <= x <= x_max]
    if not ys:
        return None
    low, high = min(ys), max(ys)
    pad = 0.06 * (high - low or abs(high) or 1.0)
    return [low - pad, high + pad]


def zoom_to(fig: go.Figure, x_min: float, x_max: float) -> go.Figure:
    """Show bpp in [x_min, x_max] with a y range fitted to what is visible (double click: everything)."""
    fig.update_xaxes(range=[x_min, x_max])
    y_range = _visible_range(fig, x_min, x_max)
    if y_range is not None:
        fig.update_yaxes(range=y_range)
    return fig


def rd_figure(
    points: Sequence[TrialPoint],
    baselines: Mapping[str, RDCurve],
    metric: str,
    title: str,
    bundles: Mapping[str, RDCurve] | None = None,
    extra_curves: Mapping[str, RDCurve] | None = None,
) -> go.Figure:
    """Completed trials, the Pareto front, baseline curves (dotted), bundle curves and curves from elsewhere
    (``extra_curves``, :func:`add_extra_curves`) on one plot."""
    fig = go.Figure()
    for index, (name, curve) in enumerate(baselines.items()):
        fig.add_trace(curve_trace(curve, metric, curve_color(name, index), dash="dot"))
    add_extra_curves(fig, extra_curves, metric)
    for index, curve in enumerate((bundles or {}).values()):
        fig.add_trace(curve_trace(curve, metric, EXTRA_COLORS[index % len(EXTRA_COLORS)], dash="dash"))
    fig.add_trace(trial_trace(points, metric, front=False))
    fig.add_trace(trial_trace(points, metric, front=True))
    _layout(fig, title, "bits per pixel (real file bytes)", METRIC_LABELS[metric])
    if points:
        rates = [p.bpp for p in points]
        zoom_to(fig, 0.6 * min(rates), 1.35 * max(rates))
    return fig


def curves_figure(
    tests: Mapping[str, RDCurve],
    baselines: Mapping[str, RDCurve],
    metric: str,
    title: str,
    extra_curves: Mapping[str, RDCurve] | None = None,
) -> go.Figure:
    """Test curves (bundles) as solid lines over dotted baseline curves and curves from elsewhere
    (``extra_curves``, :func:`add_extra_curves`)."""
    fig = go.Figure()
    for index, (name, curve) in enumerate(baselines.items()):
        fig.add_trace(curve_trace(curve, metric, curve_color(name, index), dash="dot"))
    add_extra_curves(fig, extra_curves, metric)
    for index, curve in enumerate(tests.values()):
        trace = curve_trace(curve, metric, EXTRA_COLORS[index % len(EXTRA_COLORS)])
        trace.update(line={"width": 3}, marker={"size": 7})
        fig.add_trace(trace)
    _layout(fig, title, "bits per pixel (real file bytes)", METRIC_LABELS[metric])
    if tests:
        rates = [float(r) for c in tests.values() for r in c.values(metric)[0]]
        if rates:
            zoom_to(fig, 0.6 * min(rates), 1.15 * max(rates))
    return fig


def hypervolume_figure(info: HypervolumeInfo) -> go.Figure:
    fig = go.Figure(
        go.Scatter(
            x=info.trial_numbers,
            y=info.values,
            mode="lines+markers",
            line={"shape": "hv", "color": FRONT_COLOR},
            name="hypervolume",
            hovertemplate="after trial %{x}<br>hypervolume %{y:.5f}<extra></extra>",
        )
    )
    ref_x, ref_y = info.reference
    title = f"Hypervolume of the front in (bpp, 1 − MS-SSIM); reference ({ref_x:.3f}, {ref_y:.4f})"
    return _layout(fig, title, "trial number (completed trials)", "hypervolume")


def importance_figure(info: ImportanceInfo) -> go.Figure:
    names = list(info.importances)[::-1]  # largest on top
    fig = go.Figure(
        go.Bar(
            x=[info.importances[n] for n in names],
            y=[plotly_label(n) for n in names],
            orientation="h",
            marker={"color": "#1f77b4"},
            hovertemplate="%{y}<br>importance %{x:.3f}<extra></extra>",
        )
    )
    fig = _layout(fig, f"Parameter importance for dev gain over JPEG ({info.evaluator})", "importance", "")
    return fig.update_layout(height=max(HEIGHT, 28 * len(names) + 120), margin={"l": 200})


def learning_curves_figure(curves: Sequence[LearningCurve], budget_epochs: int | None) -> go.Figure:
    """Dev MS-SSIM per epoch per trial; a pruned trial ends in an x whose hover gives the prune reason."""
    fig = go.Figure()
    for curve in curves:
        pruned = curve.prune_reason is not None
        label = f"trial {curve.number}" + ("" if curve.state == "COMPLETE" else f" ({curve.state.lower()})")
        hover = [
            f"trial {curve.number} epoch {e}<br>MS-SSIM {m:.4f}, bpp {b:.4f}<br>gain {g:+.3f} dB"
            for e, m, b, g in zip(curve.epochs, curve.msssim, curve.bpp, curve.gain_db, strict=True)
        ]
        if pruned:
            hover[-1] += f"<br><b>{plotly_label(curve.prune_reason, LINE_LIMIT)}</b>"
        fig.add_trace(
            go.Scatter(
                x=curve.epochs,
                y=curve.msssim,
                mode="lines+markers",
                name=label,
                legendgroup=str(curve.number),
                line={"dash": "dot" if pruned else "solid", "width": 1.5},
                marker={
                    "symbol": ["circle"] * (len(curve.epochs) - 1) + ["x" if pruned else "circle"],
                    "size": [6] * (len(curve.epochs) - 1) + [13 if pruned else 6],
                },
                hovertext=hover,
                hoverinfo="text",
            )
        )
    fig = _layout(fig, "Learning curves: dev MS-SSIM per epoch (x = pruned)", "epoch", "dev MS-SSIM")
    if budget_epochs:
        fig.update_xaxes(range=[0.5, budget_epochs + 0.5], dtick=1 if budget_epochs <= 20 else None)
    return fig.update_layout(showlegend=len(curves) <= 30)


def savings_figure(savings: PruningSavings) -> go.Figure:
    numbers = list(savings.epochs_run)
    pruned = set(savings.pruned)
    fig = go.Figure(
        go.Bar(
            x=numbers,
            y=[savings.epochs_run[n] for n in numbers],
            marker={"color": [TRIAL_COLOR if n in pruned else "#1f77b4" for n in numbers]},
            customdata=["pruned" if n in pruned else "complete" for n in numbers],
            hovertemplate="trial %{x} (%{customdata})<br>%{y} epochs run<extra></extra>",
            name="epochs run",
        )
    )
    fig.add_hline(
        y=savings.budget_epochs,
        line={"dash": "dash", "color": FRONT_COLOR},
        annotation_text=f"budget {savings.budget_epochs} epochs",
    )
    title = (
        f"Epochs run per finished trial: {savings.total_run} of {savings.total_budget} "
        f"({savings.saved_fraction:.0%} saved by pruning; grey = pruned)"
    )
    return _layout(fig, title, "trial number", "epochs run", bargap=0.3)
