"""A study with pruning against the same study without: trial-epochs saved and each front's hypervolume.

Both studies come from one spec and one seed (e.g. ``shrink study create studies/cpu.toml`` twice, once with
``--set pruner.name=none``) and were run to the same trial budget. Epochs count every original trial once
(a retried trial's epochs are its predecessor's plus its own, recorded in its ``epochs`` attribute).
Hypervolume is taken over each study's COMPLETE trials' objective values (best-epoch dev bpp and
1 - MS-SSIM, both minimised) with one reference for both: 1.1 x the worst of each over the two studies.

    .venv/bin/python benchmarks/pruned_vs_unpruned.py --storage sqlite:///runs/cpu-study/nopr.db \\
        --study-name cpu-nopruning --pruned-storage sqlite:///runs/cpu-study/pruned.db \\
        --pruned-study cpu-pruning
"""

from __future__ import annotations

import argparse

import optuna
from optuna.trial import TrialState

from shrink.search.pruning import hypervolume_2d
from shrink.search.trial_runner import original_number, study_curves


def epochs_by_original(study: optuna.Study) -> dict[int, int]:
    """Epochs each original trial ran, the last of its retries holding the full record."""
    epochs = {original_number(trial): 0 for trial in study.get_trials(deepcopy=False)}  # 0: failed at start
    epochs.update({number: len(curve) for number, curve in study_curves(study).items()})
    return epochs


def front_points(study: optuna.Study) -> list[tuple[float, float]]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [(t.values[0], 1 - t.values[1]) for t in complete]


def summary(study: optuna.Study, budget_epochs: int) -> dict:
    epochs = epochs_by_original(study)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {
        "trials": len(epochs),
        "complete": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "epochs": sum(epochs.values()),
        "budget": len(epochs) * budget_epochs,
        "points": front_points(study),
        "wall_s": sum(t.user_attrs.get("wall_s", 0.0) for t in study.get_trials(deepcopy=False)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True, help="the unpruned study's storage")
    parser.add_argument("--study-name", required=True)
    parser.add_argument("--pruned-storage", required=True)
    parser.add_argument("--pruned-study", required=True)
    parser.add_argument("--epochs", type=int, default=9, help="epochs per trial in the spec's budget")
    args = parser.parse_args()
    rows = {
        "unpruned": summary(optuna.load_study(study_name=args.study_name, storage=args.storage), args.epochs),
        "pruned": summary(
            optuna.load_study(study_name=args.pruned_study, storage=args.pruned_storage), args.epochs
        ),
    }
    every = [p for row in rows.values() for p in row["points"]]
    reference = (1.1 * max(p[0] for p in every), 1.1 * max(p[1] for p in every))
    print(f"HV reference (bpp {reference[0]:.4f}, 1-MS-SSIM {reference[1]:.5f})")
    print(
        f"{'study':<10}{'trials':>7}{'complete':>9}{'pruned':>7}{'trial-epochs':>14}{'saved':>8}"
        f"{'train s':>9}{'HV':>10}{'HV ratio':>9}"
    )
    hv_unpruned = hypervolume_2d(rows["unpruned"]["points"], reference)
    for name, row in rows.items():
        hv = hypervolume_2d(row["points"], reference)
        saved = 1 - row["epochs"] / row["budget"]
        print(
            f"{name:<10}{row['trials']:>7}{row['complete']:>9}{row['pruned']:>7}"
            f"{row['epochs']:>8}/{row['budget']:<5}{saved * 100:>7.1f}%{row['wall_s']:>9.0f}"
            f"{hv:>10.5f}{hv / hv_unpruned:>9.3f}"
        )


if __name__ == "__main__":
    main()
