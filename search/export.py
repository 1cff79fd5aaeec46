"""Export chosen trials as bundles (config, safetensors weights, dev metrics, sha256 manifest)."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from shrink.compression.bundle import bundle_from_checkpoint


class ExportError(ValueError):
    """A trial that cannot be exported (not complete, no checkpoint)."""


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto front (multi-objective) or the best trial (single objective), in trial order."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise ExportError(f"study {study.study_name!r} has no complete trial yet")
    return sorted(study.best_trials, key=lambda t: t.number)


def chosen_trial(study: optuna.Study, number: int) -> FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise ExportError(f"study {study.study_name!r} has no trial number {number}")
    if trials[number].state != TrialState.COMPLETE:
        raise ExportError(f"trial {number} is {trials[number].state.name}; only complete trials are exported")
    return trials[number]


def export_trial(
    study: optuna.Study, trial: FrozenTrial, out_dir: str | Path, overwrite: bool = False
) -> Path:
    checkpoint = trial.user_attrs.get("checkpoint")
    if not checkpoint or not Path(checkpoint).is_file():
        raise ExportError(f"trial {trial.number}: checkpoint {checkpoint!r} not found (run folder moved?)")
    metrics = {
        "study": study.study_name,
        "trial": trial.number,
        "values": trial.values,
        "params": trial.params,
        "rd_point": trial.user_attrs.get("rd_point"),
        "dev_points": trial.user_attrs.get("dev_points"),
        "epochs": trial.user_attrs.get("epochs"),
    }
    target = Path(out_dir) / f"trial-{trial.number:05d}"
    return bundle_from_checkpoint(checkpoint, target, metrics, overwrite=overwrite)
