"""Export chosen trials as bundles (config, safetensors weights, dev metrics, sha256 manifest), or as one
codec family of bundles with their test curves (:mod:`shrink.compression.family`)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from shrink.compression.bundle import bundle_from_checkpoint, check_directory_target, load_model
from shrink.compression.codecs import build_codec
from shrink.compression.data import NamedImage, load_images
from shrink.compression.evaluate import evaluate
from shrink.compression.family import Family, load_family, save_family
from shrink.compression.rd import RDCurve

from .records import CHECKPOINT_ATTR, DEV_POINTS_ATTR, EPOCHS_ATTR, RD_POINT_ATTR, TEST_CURVE_ATTR, read_curve
from .study import stored_spec


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


def chosen_trials(study: optuna.Study, numbers: Sequence[int] | None) -> list[FrozenTrial]:
    """The complete trials ``numbers``, or the Pareto front when None."""
    return [chosen_trial(study, n) for n in numbers] if numbers else pareto_trials(study)


def export_trial(
    study: optuna.Study, trial: FrozenTrial, out_dir: str | Path, overwrite: bool = False
) -> Path:
    checkpoint = trial.user_attrs.get(CHECKPOINT_ATTR)
    if not checkpoint or not Path(checkpoint).is_file():
        raise ExportError(f"trial {trial.number}: checkpoint {checkpoint!r} not found (run folder moved?)")
    metrics = {
        "study": study.study_name,
        "trial": trial.number,
        "values": trial.values,
        "params": trial.params,
        **{name: trial.user_attrs.get(name) for name in (RD_POINT_ATTR, DEV_POINTS_ATTR, EPOCHS_ATTR)},
    }
    target = Path(out_dir) / f"trial-{trial.number:05d}"
    return bundle_from_checkpoint(checkpoint, target, metrics, overwrite=overwrite)


def member_test_curve(trial: FrozenTrial, bundle: Path, images: Sequence[NamedImage], qualities) -> RDCurve:
    """The trial's test curve: the one stored in the study (:data:`TEST_CURVE_ATTR`), else measured now on
    ``images`` (full images, real files, as ``shrink eval``)."""
    stored = read_curve(trial, TEST_CURVE_ATTR)
    if stored is not None:
        return stored
    if not images:
        raise ExportError(f"trial {trial.number} has no stored test curve: give --test FOLDER to measure one")
    model, config = load_model(bundle)
    return evaluate(model, images, qualities, build_codec(config.codec), name=bundle.name)


def export_family(
    study: optuna.Study,
    trials: Sequence[FrozenTrial],
    out_dir: str | Path,
    test: str | None,
    qualities: Sequence[int],
    overwrite: bool = False,
) -> Family:
    """Export ``trials`` as one codec family at ``out_dir``, each member with its test curve; every trial is
    exported (and ``out_dir`` checked) before any test curve is measured."""
    out_dir = Path(out_dir)
    check_directory_target(out_dir, overwrite)
    images = load_images(test) if test else []
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.", dir=out_dir.parent) as tmp:
        bundles = [export_trial(study, trial, tmp) for trial in trials]
        members = [
            (bundle.name, bundle, member_test_curve(trial, bundle, images, qualities))
            for trial, bundle in zip(trials, bundles, strict=True)
        ]
        save_family(out_dir, members, test=str(test or stored_test_folder(study)), overwrite=overwrite)
    return load_family(out_dir)


def stored_test_folder(study: optuna.Study) -> str:
    """Where the study's stored test curves were measured: its spec's [test] folder (absolute)."""
    spec = stored_spec(study)
    return (spec.spec.test.data if spec is not None else None) or "stored"
