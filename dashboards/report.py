"""``shrink report``: one self-contained HTML page about a study, gathered first, then drawn.

:func:`gather_report` reads the study (and measures baselines / bundles, cached) into a :class:`ReportData` of
plain dataclasses; :func:`render_report` turns it into HTML with Plotly; :func:`write_report` does both and
writes the page atomically. Sections (each an ``<h2>`` with the id in :data:`SECTIONS`): RD plots, BD-rates,
bundles on another image set, refined trials on the test set, hypervolume, parameter importances, learning
curves, pruning savings, gallery; a study with three objectives (decoder cost the third) also gets
:data:`FRONT_3D_SECTION`, its Pareto front in 3-D, after the RD plots. Curves from elsewhere (``--curves``
files, ``--reference`` sets, see :mod:`.references`) are drawn on every RD plot, dashed, and left out of the
BD-rate tables (their images are not the report's).

Baseline and bundle curves are cached in a JSON file (default: ``REPORT.cache.json`` beside the report; see
:mod:`.cache`), never in the study: a report only reads the storage.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import optuna
from optuna.trial import TrialState

from shrink.compression.data import NamedImage, load_images
from shrink.compression.files import atomic_write_text
from shrink.compression.rd import RDCurve, load_curves
from shrink.compression.text import plain_text
from shrink.compression.trainer import load_dev_images
from shrink.search.records import PARENT_STUDY_ATTR
from shrink.search.results import FrontRow, format_macs, format_rate, front_rows
from shrink.search.spec import ResolvedSpec
from shrink.search.study import stored_spec

from . import html, plots
from .cache import CurveCache
from .curves import ALL_BASELINES, baseline_curves, bundle_curves, dev_baselines, find_bundles
from .gallery import GalleryInfo, get_gallery_info
from .references import get_extra_curves_info
from .refined import RefinedInfo, get_refined_info, render_refined
from .study_info import (
    BDRateRow,
    HypervolumeInfo,
    ImportanceInfo,
    LearningCurve,
    ObjectiveFrontInfo,
    PruningSavings,
    TrialPoint,
    front_curve,
    get_bd_rate_table,
    get_front_3d_info,
    get_hypervolume_info,
    get_importance_info,
    get_learning_curves_info,
    get_pruning_savings,
    get_rd_points_info,
)

SECTIONS = {
    "rd": "Rate–distortion on the dev images",
    "bd-rate": "BD-rates on the dev images",
    "data-set": "Exported bundles on another image set",
    "refined": "Refined trials on the test set",
    "hypervolume": "Hypervolume over trials",
    "importance": "Parameter importances",
    "learning-curves": "Learning curves",
    "pruning": "Pruning savings",
    "gallery": "Image gallery",
}
FRONT_3D_SECTION = ("front-3d", "Pareto front in three objectives")  # only for studies with three
RD_METRICS = ("msssim", "msssim_db", "psnr")
EXTRA_CURVES_NOTE = (
    "The thin dashed curves with open markers (--curves, --reference) are drawn as read: measured on their "
    "own images (CompressAI's on Kodak), they compare with ours only on the same images, and are left out "
    "of the BD-rate tables."
)


@dataclass
class ReportOptions:
    bundles: Path | None = None  # a folder of bundles (shrink export --pareto --out DIR) or one bundle
    data: Path | None = None  # another image set (e.g. Kodak) to evaluate the bundles on
    data_baselines: Path | None = None  # a `shrink baselines --json` file of that set, instead of measuring
    qualities: list[int] | None = None  # quality grid of baselines and bundles (default DEFAULT_QUALITIES)
    cache: Path | None = None  # the curve cache file; None keeps curves in memory only
    gallery_images: int = 3
    crop: int = 128
    roots: list[Path] = field(default_factory=lambda: [Path.cwd()])  # for relative checkpoint paths
    storage_label: str = ""
    curves: list[Path] = field(default_factory=list)  # curve files (ours or CompressAI's) to draw beside ours
    references: list[str] = field(default_factory=list)  # shipped reference sets to draw (REFERENCE_SETS)


@dataclass
class DataSetInfo:
    folder: str
    n_images: int
    baselines: dict[str, RDCurve]
    bundles: dict[str, RDCurve]
    bd_rows: list[BDRateRow]
    notes: list[str] = field(default_factory=list)


@dataclass
class ReportData:
    study_name: str
    storage: str
    generated: str
    directions: list[str]
    state_counts: dict[str, int]
    budget_epochs: int | None
    points: list[TrialPoint]
    front_table: list[FrontRow]
    dev_baselines: dict[str, RDCurve]
    dev_bundles: dict[str, RDCurve]
    bd_rows: list[BDRateRow]
    data_set: DataSetInfo | None
    refined: RefinedInfo
    hypervolume: HypervolumeInfo
    importance: ImportanceInfo
    learning: list[LearningCurve]
    savings: PruningSavings
    gallery: GalleryInfo
    notes: dict[str, list[str]] = field(default_factory=dict)  # section id -> notes
    front_3d: ObjectiveFrontInfo | None = None  # None unless the study has three objectives
    extra_curves: dict[str, RDCurve] = field(default_factory=dict)  # --curves and --reference, drawn only


# ---------------------------------------------------------------- gathering


def _dev_images(spec: ResolvedSpec | None, notes: list[str]) -> list[NamedImage]:
    if spec is None:
        notes.append("the study stores no shrink spec: its dev images (and baselines on them) are unknown")
        return []
    try:
        return load_dev_images(spec.base_config.data)
    except (OSError, ValueError) as error:
        notes.append(f"dev images not loadable here, baselines left out: {error}")
        return []


def _budget_epochs(spec: ResolvedSpec | None, learning: Sequence[LearningCurve]) -> int | None:
    if spec is not None:
        return spec.base_config.training.epochs
    return max((max(c.epochs) for c in learning), default=None)


def _data_set(options: ReportOptions, cache: CurveCache, bundles: Sequence[Path]) -> DataSetInfo | None:
    if options.data is None:
        return None
    images = load_images(options.data)
    notes = []
    if options.data_baselines is not None:
        baselines = load_curves(options.data_baselines)
        notes.append(f"baselines read from {options.data_baselines}")
    else:
        baselines = baseline_curves(images, ALL_BASELINES, cache, options.qualities)
    tests = bundle_curves(bundles, images, cache, options.qualities)
    if not bundles:
        notes.append("no bundles to evaluate: pass --bundles DIR (from shrink export --pareto --out DIR)")
    rows = get_bd_rate_table(tests, baselines)
    return DataSetInfo(str(options.data), len(images), baselines, tests, rows, notes)


def gather_report(
    study: optuna.Study, options: ReportOptions | None = None, log: Callable[[str], None] = print
) -> ReportData:
    """Everything the report shows, as plain data (measuring and caching baselines and bundles)."""
    options = options or ReportOptions()
    bundles = find_bundles(options.bundles)  # a wrong folder fails before anything is measured
    extra_curves = get_extra_curves_info(options.curves, options.references)  # so does a bad curve file
    cache = CurveCache(options.cache)
    notes: dict[str, list[str]] = {key: [] for key in SECTIONS}
    if extra_curves:
        notes["rd"].append(EXTRA_CURVES_NOTE)
    spec = stored_spec(study)
    points = get_rd_points_info(study)
    log(f"report: {len(points)} completed trials; dev baselines")
    images = _dev_images(spec, notes["rd"])
    baselines = dev_baselines(study, images, cache, options.qualities) if images else {}
    log(f"report: {len(bundles)} bundles on the dev images")
    dev_bundle_curves = bundle_curves(bundles, images, cache, options.qualities) if images else {}
    tests = {"Pareto front": front_curve(points), **dev_bundle_curves}
    log("report: other image set" if options.data else "report: trials")
    data_set = _data_set(options, cache, bundles)
    refined = get_refined_info(study, spec, cache, options.qualities)
    learning = get_learning_curves_info(study)
    budget = _budget_epochs(spec, learning)
    log("report: gallery")
    test = spec.spec.test.data if spec is not None and PARENT_STUDY_ATTR in study.user_attrs else None
    gallery = get_gallery_info(study, points, options.roots, options.gallery_images, options.crop, test)
    return ReportData(
        study_name=study.study_name,
        storage=options.storage_label,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        directions=[d.name.lower() for d in study.directions],
        state_counts=_state_counts(study),
        budget_epochs=budget,
        points=points,
        front_table=front_rows(study, baselines["jpeg"]) if "jpeg" in baselines else [],
        dev_baselines=baselines,
        dev_bundles=dev_bundle_curves,
        bd_rows=get_bd_rate_table(tests, baselines),
        data_set=data_set,
        refined=refined,
        hypervolume=get_hypervolume_info(points),
        importance=get_importance_info(study),
        learning=learning,
        savings=get_pruning_savings(study, budget or 0),
        gallery=gallery,
        notes=notes,
        front_3d=get_front_3d_info(study),
        extra_curves=extra_curves,
    )


def _state_counts(study: optuna.Study) -> dict[str, int]:
    counts = {state.name: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
    return {name: count for name, count in counts.items() if count}


# ---------------------------------------------------------------- rendering


def _header(data: ReportData) -> str:
    states = ", ".join(f"{count} {name.lower()}" for name, count in data.state_counts.items()) or "no trials"
    return (
        f"<h1>shrink study report: {html.esc_name(data.study_name)}</h1>\n"
        f'<p class="meta">{html.esc(data.storage)} · directions {html.esc(", ".join(data.directions))} · '
        f"{html.esc(states)} · budget {data.budget_epochs} epochs per trial · generated {data.generated}</p>"
    )


def _front_table(rows: Sequence[FrontRow]) -> str:
    """The front beside JPEG; a rate column when any trial recorded its dev rate, a decoder MACs/px column
    when any trial recorded its decoder's cost."""
    rates = any(r.rate_change is not None for r in rows)
    macs = any(r.decoder_macs_per_pixel is not None for r in rows)
    body = [
        [str(r.number), f"{r.bpp:.4f}", f"{r.msssim:.4f}", f"{r.jpeg_msssim:.4f}", f"{r.gain_db:+.3f}"]
        + ([format_rate(r.rate_change)] if rates else [])
        + ([format_macs(r.decoder_macs_per_pixel)] if macs else [])
        for r in rows
    ]
    headers = ["trial", "bpp", "MS-SSIM", "JPEG MS-SSIM @bpp", "gain dB"]
    headers += (["rate vs JPEG @MS-SSIM"] if rates else []) + (["decoder MACs/px"] if macs else [])
    return html.table(headers, body)


def _rd_section(data: ReportData) -> str:
    parts = [html.note(n) for n in data.notes["rd"]]
    if not data.points:
        parts.append(html.note("no completed trial yet"))
    titles = {"msssim": "MS-SSIM", "msssim_db": "MS-SSIM (dB)", "psnr": "PSNR"}
    for metric in RD_METRICS:
        title = f"Dev bpp vs {titles[metric]}"
        fig = plots.rd_figure(
            data.points, data.dev_baselines, metric, title, data.dev_bundles, data.extra_curves
        )
        parts.append(html.figure(fig, f"plot-rd-{metric}"))
    if data.front_table:
        parts += [
            html.paragraph("Pareto front beside the study's dev JPEG curve:"),
            _front_table(data.front_table),
        ]
    return "\n".join(parts)


def _front_3d_section(data: ReportData) -> str:
    info = data.front_3d
    intro = html.paragraph(
        "The study minimises the decoder's cost too, so its Pareto front is Optuna's over all three "
        "objectives: a trial is on it when no other trial is at least as good in each and better in one. "
        "The RD plots above mark the same trials."
    )
    if not info.points:
        return intro + html.note("no completed trial yet")
    return intro + html.figure(plots.front_3d_figure(info), "plot-front-3d")


def _bd_section(data: ReportData) -> str:
    intro = html.paragraph(
        "BD-rate (%) of the Pareto front (its trials' dev points as one curve, by bpp) and of each bundle "
        "(evaluated on the dev images) against each baseline; negative = fewer bits at equal quality."
    )
    return intro + html.bd_table(data.bd_rows) if data.bd_rows else html.note("no baseline curves to compare")


def _data_section(data: ReportData) -> str:
    info = data.data_set
    if info is None:
        return html.note("no other image set: run with --data DIR (e.g. Kodak) and --bundles DIR")
    parts = [html.paragraph(f"{info.n_images} images from {info.folder}.")]
    parts += [html.note(n) for n in info.notes]
    if data.extra_curves:
        parts.append(html.note(EXTRA_CURVES_NOTE))
    for metric in ("msssim_db", "psnr"):
        folder = html.plotly_label(Path(info.folder).name)
        title = f"Bundles vs baselines on {folder}: bpp vs {plots.METRIC_LABELS[metric]}"
        fig = plots.curves_figure(info.bundles, info.baselines, metric, title, data.extra_curves)
        parts.append(html.figure(fig, f"plot-data-{metric}"))
    if info.bd_rows:
        parts.append(html.bd_table(info.bd_rows))
    return "\n".join(parts)


def _hypervolume_section(data: ReportData) -> str:
    if not data.hypervolume.values:
        return html.note("no completed trial yet")
    return html.figure(plots.hypervolume_figure(data.hypervolume), "plot-hypervolume")


def _importance_section(data: ReportData) -> str:
    parts = [html.note(n) for n in data.importance.notes]
    if data.importance.importances:
        parts.append(html.figure(plots.importance_figure(data.importance), "plot-importance"))
    return "\n".join(parts) or html.note("no importances")


def _learning_section(data: ReportData) -> str:
    if not data.learning:
        return html.note("no trial has recorded an epoch yet")
    return html.figure(plots.learning_curves_figure(data.learning, data.budget_epochs), "plot-learning")


def _pruning_section(data: ReportData) -> str:
    s = data.savings
    summary = html.table(
        ["finished trials", "pruned", "budget / trial", "epochs run", "epochs if unpruned", "saved"],
        [[str(s.n_finished), str(len(s.pruned)), str(s.budget_epochs), str(s.total_run), str(s.total_budget),
          f"{s.saved} ({s.saved_fraction:.0%})"]],
        name_columns=0,
    )  # fmt: skip
    if not s.epochs_run:
        return summary
    return summary + html.figure(plots.savings_figure(s), "plot-pruning")


RENDERERS = {
    "rd": _rd_section,
    FRONT_3D_SECTION[0]: _front_3d_section,
    "bd-rate": _bd_section,
    "data-set": _data_section,
    "refined": lambda data: render_refined(data.refined, data.extra_curves),
    "hypervolume": _hypervolume_section,
    "importance": _importance_section,
    "learning-curves": _learning_section,
    "pruning": _pruning_section,
    "gallery": lambda data: html.gallery(data.gallery),
}


def report_sections(data: ReportData) -> dict[str, str]:
    """:data:`SECTIONS`, with :data:`FRONT_3D_SECTION` after the RD plots when the study has three
    objectives."""
    if data.front_3d is None:
        return SECTIONS
    first, *rest = SECTIONS.items()
    return dict([first, FRONT_3D_SECTION, *rest])


def render_report(data: ReportData) -> str:
    shown = report_sections(data)
    sections = [html.section(key, title, RENDERERS[key](data)) for key, title in shown.items()]
    title = f"shrink report: {plain_text(data.study_name)}"
    return html.page(title, _header(data), list(shown.items()), sections)


def write_report(
    study: optuna.Study,
    out: str | Path,
    options: ReportOptions | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Gather, render and write the report atomically (temp file + rename); returns ``out``."""
    text = render_report(gather_report(study, options, log))
    path = atomic_write_text(out, text)
    os.chmod(path, 0o644)  # a page to share: the temp file's 0600 would hide it from others
    return path
