"""What a report shows about a study, as plain data (no plotly): read from what ``shrink.search`` stores.

Every ``get_*_info`` function takes an ``optuna.Study`` and returns dataclasses, lists and floats, so each is
testable against the stored trials without drawing anything. Trial values come from the user attributes the
trial runner writes: ``rd_point`` (the best epoch: dev bpp, MS-SSIM, dB, PSNR, gain), ``epochs`` (one record
per epoch), ``prune_reason`` and ``checkpoint``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from shrink.compression.bdrate import safe_bd_rate
from shrink.compression.rd import RDCurve, RDPoint
from shrink.search.pruning import hypervolume_2d
from shrink.search.records import (
    DECODER_LIMIT_ATTR,
    PRUNE_REASON_ATTR,
    EpochSummary,
    TrialResult,
    read_epochs,
    read_trial_result,
    stored_rd_point,
)
from shrink.search.results import completed_points

BD_METRICS = ("msssim_db", "psnr")


# ---------------------------------------------------------------- RD points and the front


class TrialPoint(TrialResult):
    """A completed trial's result (its best epoch's dev RD point) and whether it is on the Pareto front."""

    on_front: bool


def get_rd_points_info(study: optuna.Study) -> list[TrialPoint]:
    """Every completed trial with an ``rd_point``, by trial number; front = ``study.best_trials``."""
    trials = completed_points(study)
    front = _front_numbers(study, trials)
    return [_trial_point(t, t.number in front) for t in sorted(trials, key=lambda t: t.number)]


def _front_numbers(study: optuna.Study, trials: list[FrozenTrial]) -> set[int]:
    """The numbers of ``study.best_trials`` (Optuna's front over all the study's objectives)."""
    return {t.number for t in study.best_trials} if trials else set()


def _trial_point(trial: FrozenTrial, on_front: bool) -> TrialPoint:
    return TrialPoint(**dict(read_trial_result(trial)), on_front=on_front)


# ---------------------------------------------------------------- the front in three objectives


class ObjectivePoint(TrialPoint):
    """A completed trial's objective values (one per study direction) beside its result."""

    values: list[float]


@dataclass
class ObjectiveFrontInfo:
    """The completed trials in the space of the study's objectives: names and directions (``minimize`` /
    ``maximize``) per axis, each trial's values, and whether it is on Optuna's front over all of them."""

    names: list[str]
    directions: list[str]
    points: list[ObjectivePoint]


def objective_names(study: optuna.Study) -> list[str]:
    """The study's metric names (``study create`` sets them), else ``objective 0``, ``objective 1``, ..."""
    return list(study.metric_names or [f"objective {i}" for i in range(len(study.directions))])


def get_front_3d_info(study: optuna.Study) -> ObjectiveFrontInfo | None:
    """For a study with 3 objectives (``decoder_cost = "objective"`` with ``mode = "multi"``: dev bpp,
    dev MS-SSIM, decoder MACs/px) its completed trials in objective space, by trial number; None for any
    other number of objectives (their fronts are the RD plots' own)."""
    if len(study.directions) != 3:
        return None
    trials = sorted(completed_points(study), key=lambda t: t.number)
    front = _front_numbers(study, trials)
    points = [
        ObjectivePoint(**dict(_trial_point(t, t.number in front)), values=list(t.values)) for t in trials
    ]
    directions = [d.name.lower() for d in study.directions]
    return ObjectiveFrontInfo(objective_names(study), directions, points)


def front_curve(points: Iterable[TrialPoint], name: str = "Pareto front") -> RDCurve:
    """The front's points as one RD curve, sorted by bpp (quality = None: each point is a trial)."""
    front = sorted((p for p in points if p.on_front), key=lambda p: (p.bpp, p.number))
    return RDCurve(name, [RDPoint(None, p.bpp, p.msssim, p.msssim_db, p.psnr) for p in front])


def best_front_trial(points: Iterable[TrialPoint]) -> TrialPoint | None:
    """The front's trial with the highest dev gain over JPEG (ties: the lower trial number)."""
    front = [p for p in points if p.on_front]
    return max(front, key=lambda p: (p.gain_db, -p.number)) if front else None


# ---------------------------------------------------------------- BD-rates


@dataclass
class BDRateRow:
    """BD-rate (%) of ``test`` against ``anchor`` per metric; None with a note where it is n/a."""

    test: str
    anchor: str
    values: dict[str, float | None]
    notes: dict[str, str] = field(default_factory=dict)


def get_bd_rate_table(tests: Mapping[str, RDCurve], anchors: Mapping[str, RDCurve]) -> list[BDRateRow]:
    """One row per (test, anchor): BD-rate in MS-SSIM dB and PSNR, or None + the reason it is n/a."""
    rows = []
    for test_name, test in tests.items():
        for anchor_name, anchor in anchors.items():
            row = BDRateRow(test_name, anchor_name, {})
            for metric in BD_METRICS:
                row.values[metric], note = safe_bd_rate(anchor, test, metric)
                if note:
                    row.notes[metric] = note
            rows.append(row)
    return rows


# ---------------------------------------------------------------- hypervolume


@dataclass
class HypervolumeInfo:
    """Running hypervolume of the completed trials' front in (bpp, 1 - MS-SSIM), both minimised."""

    trial_numbers: list[int]
    values: list[float]
    reference: tuple[float, float]


def get_hypervolume_info(points: list[TrialPoint]) -> HypervolumeInfo:
    """After each completed trial (by number), the hypervolume of all completed points so far.

    Reference point: 1.1 x the maximum bpp and 1.1 x the maximum (1 - MS-SSIM) over all completed trials.
    """
    if not points:
        return HypervolumeInfo([], [], (math.nan, math.nan))
    pairs = [(p.bpp, 1.0 - p.msssim) for p in points]
    reference = (1.1 * max(x for x, _ in pairs), 1.1 * max(y for _, y in pairs))
    values = [hypervolume_2d(pairs[: i + 1], reference) for i in range(len(pairs))]
    return HypervolumeInfo([p.number for p in points], values, reference)


# ---------------------------------------------------------------- parameter importances


@dataclass
class ImportanceInfo:
    """Importance of each parameter for the dev gain over JPEG; empty with a note when not computable."""

    importances: dict[str, float]
    evaluator: str
    notes: list[str] = field(default_factory=list)


def gain_target(trial: FrozenTrial) -> float:
    """The importance target: a completed trial's dev gain over JPEG in dB (its ``rd_point``)."""
    return float(stored_rd_point(trial)["dev_gain_db"])


def get_importance_info(study: optuna.Study) -> ImportanceInfo:
    """Optuna's default evaluator (PED-ANOVA in Optuna 5) on the completed trials' dev gain.

    PED-ANOVA measures what it takes to reach *low* target values, so it is given the negated gain: the
    parameters that matter for a high gain over JPEG. Fewer than 2 completed trials, or an evaluator
    failure, give no importances and a note saying why; evaluator warnings become notes.
    """
    evaluator = "PED-ANOVA (Optuna default), target = -dev gain dB"
    completed = completed_points(study)
    if len(completed) < 2:
        return ImportanceInfo({}, evaluator, [f"needs 2 or more completed trials (has {len(completed)})"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            importances = optuna.importance.get_param_importances(study, target=lambda t: -gain_target(t))
        except Exception as error:  # any evaluator failure is a note, never a failed report
            return ImportanceInfo({}, evaluator, [f"not computable: {type(error).__name__}: {error}"])
    notes = sorted({str(w.message) for w in caught if not _is_noise(w)})
    return ImportanceInfo({k: float(v) for k, v in importances.items()}, evaluator, notes)


def _is_noise(warning: warnings.WarningMessage) -> bool:
    return issubclass(warning.category, optuna.exceptions.ExperimentalWarning) or "low `target`" in str(
        warning.message
    )


# ---------------------------------------------------------------- learning curves and pruning


@dataclass
class LearningCurve:
    """One trial's dev metrics per epoch (partial epochs left out) and, if pruned, why."""

    number: int
    state: str
    epochs: list[int]
    msssim: list[float]
    bpp: list[float]
    gain_db: list[float]
    prune_reason: str | None


def full_epochs(trial: FrozenTrial) -> list[EpochSummary]:
    return read_epochs(trial)


def get_learning_curves_info(study: optuna.Study) -> list[LearningCurve]:
    """Every trial that recorded an epoch (complete, pruned, failed or running), by trial number."""
    curves = []
    for trial in study.get_trials(deepcopy=False):
        epochs = full_epochs(trial)
        if not epochs:
            continue
        curves.append(
            LearningCurve(
                number=trial.number,
                state=trial.state.name,
                epochs=[e.epoch for e in epochs],
                msssim=[e.dev_msssim for e in epochs],
                bpp=[e.dev_bpp for e in epochs],
                gain_db=[e.dev_gain_db for e in epochs],
                prune_reason=_prune_reason(trial),
            )
        )
    return curves


def _prune_reason(trial: FrozenTrial) -> str | None:
    if trial.state != TrialState.PRUNED:
        return None
    return str(trial.user_attrs.get(PRUNE_REASON_ATTR) or "pruned (no reason stored)")


@dataclass
class PruningSavings:
    """Epochs the finished (complete or pruned) trials ran, against each running the full budget."""

    budget_epochs: int
    epochs_run: dict[int, int]  # trial number -> full epochs it ran
    pruned: list[int]

    @property
    def n_finished(self) -> int:
        return len(self.epochs_run)

    @property
    def total_run(self) -> int:
        return sum(self.epochs_run.values())

    @property
    def total_budget(self) -> int:
        return self.n_finished * self.budget_epochs

    @property
    def saved(self) -> int:
        return self.total_budget - self.total_run

    @property
    def saved_fraction(self) -> float:
        return self.saved / self.total_budget if self.total_budget else 0.0


def get_pruning_savings(study: optuna.Study, budget_epochs: int) -> PruningSavings:
    """What the pruners saved; trials pruned before training for their decoder's cost
    (``objective.max_decoder_macs_per_pixel``) are left out: no pruner judged them."""
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    ordered = sorted((t for t in finished if DECODER_LIMIT_ATTR not in t.user_attrs), key=lambda t: t.number)
    return PruningSavings(
        budget_epochs=int(budget_epochs),
        epochs_run={t.number: len(full_epochs(t)) for t in ordered},
        pruned=[t.number for t in ordered if t.state == TrialState.PRUNED],
    )


# ---------------------------------------------------------------- checkpoints


def resolve_checkpoint(stored: str | None, roots: Iterable[Path]) -> Path | None:
    """The trial's ``checkpoint`` attribute as an existing file: as stored, else under each root in turn.

    Workers store the path they wrote, relative to their working directory when the run root was relative
    (the demo's ``runs/demo/runs/...``), so a report run elsewhere looks for it under ``roots``.
    """
    if not stored:
        return None
    path = Path(stored)
    if _is_file(path):
        return path
    if not path.is_absolute():
        for root in roots:
            if _is_file(Path(root) / path):
                return Path(root) / path
    return None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a stored path too long for the system, or holding a NUL: no file
        return False


def storage_roots(url: str) -> list[Path]:
    """Where relative checkpoint paths may start: the working directory, then a file storage's folders."""
    roots = [Path.cwd()]
    for prefix in ("sqlite:///", "journal:"):
        if url.startswith(prefix):
            folder = Path(url[len(prefix) :]).resolve().parent
            roots += [folder, *folder.parents]
    if url.endswith(".log") and "://" not in url:
        folder = Path(url).resolve().parent
        roots += [folder, *folder.parents]
    return list(dict.fromkeys(roots))
