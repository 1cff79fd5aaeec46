"""Worker hooks the CLI wires in: optuna-dashboard notes, crops and the study plots (from dashboards/)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna

from shrink.dashboards.trial_artifacts import artifact_store, record_trial, update_study_plots
from shrink.search.study import StudyHandle


def dashboard_hooks(
    handle: StudyHandle,
    run_root: str | Path,
    then: Callable[[optuna.trial.FrozenTrial], None] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """``Worker(..., **dashboard_hooks(handle, run_root))``: artifacts per trial, study plots after each (the
    RD plot; the 3-D Pareto front when decoder cost is a third objective); a plot not stored is logged."""
    store = artifact_store(run_root)

    def on_trial_end(trial: optuna.trial.FrozenTrial) -> None:
        update_study_plots(handle.study, handle.dev_jpeg, log)
        if then is not None:
            then(trial)

    return {
        "on_complete": lambda trial, trainer, best: record_trial(store, trial, trainer, best),
        "on_trial_end": on_trial_end,
    }
