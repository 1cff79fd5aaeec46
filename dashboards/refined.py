"""The refine study's section: refined trials on the held-out test set, as members of one codec family.

:func:`get_refined_info` gathers (the test curves ``shrink refine``'s trials stored, their envelope, the
baselines on the same test images, BD-rates, and whether the search's ranking predicted the refined one);
:func:`render_refined` draws it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from shrink.compression.data import load_images
from shrink.compression.family import Member, envelope
from shrink.compression.rd import RDCurve
from shrink.search.records import PARENT_STUDY_ATTR, SEARCH_FIDELITY_ATTR, TEST_CURVE_ATTR, read_curve
from shrink.search.refine import FIDELITY_FIELDS, RankAgreement, fidelity, rank_agreement
from shrink.search.spec import ResolvedSpec

from . import html, plots
from .cache import CurveCache
from .curves import ALL_BASELINES, baseline_curves
from .study_info import BDRateRow, get_bd_rate_table

ENVELOPE = "family envelope"


@dataclass
class RefinedInfo:
    test_folder: str | None = None
    members: dict[str, RDCurve] = field(default_factory=dict)  # "trial-NNNNN" -> its stored test curve
    envelope: RDCurve | None = None  # the family's curve: the members' upper envelope
    envelope_points: list[tuple[str, float]] = field(default_factory=list)  # (member, bpp) on the envelope
    baselines: dict[str, RDCurve] = field(default_factory=dict)
    bd_rows: list[BDRateRow] = field(default_factory=list)
    agreement: RankAgreement | None = None
    fidelity: list[tuple[str, str, str]] = field(default_factory=list)  # (field, search, refined) as text
    notes: list[str] = field(default_factory=list)

    @property
    def tests(self) -> dict[str, RDCurve]:
        """The envelope first, then each member."""
        return {ENVELOPE: self.envelope, **self.members} if self.envelope is not None else {}


def get_refined_info(
    study: optuna.Study, spec: ResolvedSpec | None, cache: CurveCache, qualities: Sequence[int] | None = None
) -> RefinedInfo:
    info = RefinedInfo()
    if PARENT_STUDY_ATTR not in study.user_attrs:
        info.notes.append("not a refine study: `shrink refine --pareto` retrains a search's front as one")
        return info
    info.agreement = rank_agreement(study)
    search = study.user_attrs.get(SEARCH_FIDELITY_ATTR)  # absent: a refine study made before it was stored
    refined = fidelity(spec) if spec is not None else None
    info.fidelity = [(name, _at(search, name), _at(refined, name)) for name in FIDELITY_FIELDS]
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        curve = read_curve(trial, TEST_CURVE_ATTR)
        if curve is not None:
            info.members[f"trial-{trial.number:05d}"] = RDCurve(f"trial-{trial.number:05d}", curve.points)
    if not info.members:
        info.notes.append("no refined trial has a test curve yet (the spec's [test] names the test set)")
        return info
    members = [Member(name, "", curve) for name, curve in info.members.items()]
    on_envelope = envelope(members)
    info.envelope_points = [(name, point.bpp) for name, point in on_envelope]
    info.envelope = RDCurve(ENVELOPE, [point for _, point in on_envelope])
    info.test_folder = spec.spec.test.data if spec is not None else None
    try:
        images = load_images(info.test_folder) if info.test_folder else []
    except (OSError, ValueError) as error:
        images = []
        info.notes.append(f"test images not loadable here, baselines left out: {error}")
    if images:
        grid = qualities or (spec.spec.test.qualities if spec is not None else None)
        info.baselines = baseline_curves(images, ALL_BASELINES, cache, grid)
        info.bd_rows = get_bd_rate_table(info.tests, info.baselines)
    return info


def render_refined(info: RefinedInfo, extra_curves: Mapping[str, RDCurve] | None = None) -> str:
    parts = [html.note(n) for n in info.notes]
    if info.fidelity:
        rows = [[html.esc_name(cell) for cell in row] for row in info.fidelity]
        parts.append(html.table(["training fidelity", "search ([budget])", "refined ([refine])"], rows))
    if info.members:
        parts.append(
            html.paragraph(
                f"{len(info.members)} refined trials on {info.test_folder}, never used for selection; the "
                "family's envelope takes each rate from the member highest there (shrink export --family)."
            )
        )
        for metric in ("msssim_db", "psnr"):
            title = f"Refined members, their envelope and baselines: bpp vs {plots.METRIC_LABELS[metric]}"
            fig = plots.curves_figure(info.tests, info.baselines, metric, title, extra_curves)
            parts.append(html.figure(fig, f"plot-refined-{metric}"))
        if info.bd_rows:
            parts.append(html.bd_table(info.bd_rows))
    if info.agreement is not None and info.agreement.pairs:
        rows = [[str(p), f"{s:+.3f}", f"{r:+.3f}"] for p, s, r in info.agreement.pairs]
        parts.append(html.table(["parent trial", "search dev gain dB", "refined dev gain dB"], rows))
        rho = info.agreement.rho
        text = "n/a (needs 3 refined trials)" if rho is None else f"{rho:+.3f}"
        parts.append(html.paragraph(f"Spearman ρ between search-fidelity and refined dev gain: {text}"))
    return "\n".join(parts)


def _at(values: dict | None, name: str) -> str:
    if values is None:
        return "unknown"
    return "none" if values.get(name) is None else str(values[name])
