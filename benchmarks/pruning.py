"""What the multi-objective pruners save and what they lose: full learning curves replayed through each one.

Every trial's full curve (the whole epoch budget) is replayed through each pruner as one worker would run
the trials, one after another by trial number (:func:`shrink.search.pruning.replay`). Per pruner it prints
the trial-epochs run against the total (the share saved) and the hypervolume of the front of the trials that
ran to the end against that of all trials (the ratio). Target: ratio >= 0.95 at >= 50 % saved.

Hypervolume is taken in (bpp, 1 - MS-SSIM) space, both minimised, over each trial's final-epoch point. The
reference is the nadir of the whole unpruned population pushed 10 % out, (1.1 * max bpp,
1.1 * max(1 - MS-SSIM)) over all trials' final points, computed once and used for every pruner, so every
trial counts and the ratio says how much of the full front survives pruning.

    .venv/bin/python benchmarks/pruning.py --synthetic 30
    .venv/bin/python benchmarks/pruning.py --curves curves.json
    .venv/bin/python benchmarks/pruning.py --storage sqlite:///runs/study.db --study-name NAME

``--curves`` reads {"trials": {"<number>": [epoch records]}}; ``--storage`` reads each trial's user attribute
"epochs" (the same records). Records need ``epoch``, ``dev_bpp``, ``dev_msssim`` and ``dev_gain_db``. Trials
shorter than the longest one (pruned or unfinished) cannot be replayed honestly and are left out.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from shrink.search.pruning import PRUNERS, EpochPoint, build_mo_pruner, hypervolume_2d, replay, rung_epochs

Curves = dict[int, list[EpochPoint]]
JPEG_DB_AT_1BPP, JPEG_DB_PER_LOG_BPP = 17.2, 5.4  # a rough JPEG MS-SSIM dB curve for the synthetic data


def parse_curves(trials: Mapping[str, Sequence[Mapping]]) -> Curves:
    return {
        int(number): sorted((EpochPoint.from_record(r) for r in records), key=lambda p: p.epoch)
        for number, records in trials.items()
    }


def load_json(path: str) -> Curves:
    return parse_curves(json.loads(Path(path).read_text())["trials"])


def load_study(storage: str, study_name: str) -> Curves:
    """Each trial's recorded epochs (user attribute "epochs"), as the pruners see them in a study."""
    import optuna

    from shrink.search.trial_runner import study_curves

    return study_curves(optuna.load_study(study_name=study_name, storage=storage))


def synthetic(trials: int, epochs: int, seed: int) -> Curves:
    """A seeded population of noisy saturating curves at rates spread over 0.25-1.2 bpp.

    Each trial converges from a poor start towards its own final gain over JPEG (some never beat it) at its
    own pace, so early ranks are informative but not exact; MS-SSIM is JPEG's at that bpp plus the gain.
    """
    rng = np.random.default_rng(seed)
    curves: Curves = {}
    for number in range(trials):
        final_bpp = math.exp(rng.uniform(math.log(0.25), math.log(1.2)))
        start_bpp = final_bpp * rng.uniform(1.0, 1.4)
        final_gain, start_gain = rng.normal(0.2, 0.7), rng.normal(-0.8, 0.3)
        pace = rng.uniform(0.8, 4.0)
        curve = []
        for epoch in range(1, epochs + 1):
            left = math.exp(-epoch / pace)
            bpp = (final_bpp + (start_bpp - final_bpp) * left) * (1 + rng.normal(0, 0.01))
            gain = final_gain + (start_gain - final_gain) * left + rng.normal(0, 0.08)
            db = JPEG_DB_AT_1BPP + JPEG_DB_PER_LOG_BPP * math.log(bpp) + gain
            curve.append(EpochPoint(epoch, bpp, 1 - 10 ** (-db / 10), gain))
        curves[number] = curve
    return curves


def full_length(curves: Curves) -> tuple[Curves, int]:
    """The trials that ran the whole budget (the longest curve's last epoch) and how many were left out."""
    budget = max(curve[-1].epoch for curve in curves.values())
    full = {number: curve for number, curve in curves.items() if curve[-1].epoch == budget}
    return full, len(curves) - len(full)


def final_point(curve: Sequence[EpochPoint]) -> tuple[float, float]:
    return curve[-1].dev_bpp, 1 - curve[-1].dev_msssim


def reference_point(curves: Curves) -> tuple[float, float]:
    points = [final_point(curve) for curve in curves.values()]
    return 1.1 * max(p[0] for p in points), 1.1 * max(p[1] for p in points)


def score(curves: Curves, epochs_run: Mapping[int, int], reference: tuple[float, float]) -> dict[str, float]:
    total = sum(curve[-1].epoch for curve in curves.values())
    run = sum(epochs_run.values())
    completed = [n for n, curve in curves.items() if epochs_run[n] == curve[-1].epoch]
    hv_kept = hypervolume_2d([final_point(curves[n]) for n in completed], reference)
    hv_all = hypervolume_2d([final_point(curve) for curve in curves.values()], reference)
    return {
        "run": run,
        "total": total,
        "saved": 1 - run / total,
        "completed": len(completed),
        "hv_kept": hv_kept,
        "hv_all": hv_all,
        "ratio": hv_kept / hv_all if hv_all > 0 else math.nan,
    }


def table(rows: Mapping[str, Mapping[str, float]], trials: int) -> str:
    lines = [
        f"{'pruner':<16}{'epochs run':>12}{'saved':>9}{'completed':>11}{'HV completed':>14}{'HV all':>10}"
        f"{'HV ratio':>10}  target"
    ]
    for name, row in rows.items():
        met = "-" if name == "none" else "met" if row["saved"] >= 0.5 and row["ratio"] >= 0.95 else "missed"
        lines.append(
            f"{name:<16}{row['run']:>6}/{row['total']:<5}{row['saved'] * 100:>8.1f}%"
            f"{row['completed']:>7}/{trials:<3}{row['hv_kept']:>14.5f}{row['hv_all']:>10.5f}"
            f"{row['ratio']:>10.3f}  {met}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", help="JSON file {'trials': {'<number>': [epoch records]}}")
    parser.add_argument("--storage", help="Optuna storage URL (with --study-name)")
    parser.add_argument("--study-name")
    parser.add_argument("--synthetic", type=int, metavar="N", help="replay N seeded synthetic trials")
    parser.add_argument("--epochs", type=int, default=12, help="epoch budget of the synthetic trials")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-epochs", type=int, default=1)
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--min-peers", type=int, default=3)
    parser.add_argument(
        "--rate-tolerance", type=float, default=0.0, help="pareto-halving: bpp factor within which to compare"
    )
    args = parser.parse_args()
    if bool(args.storage) != bool(args.study_name):
        parser.error("--storage and --study-name go together")

    sources: list[tuple[str, Curves]] = []
    if args.curves:
        sources.append((args.curves, load_json(args.curves)))
    if args.storage:
        sources.append((f"study {args.study_name}", load_study(args.storage, args.study_name)))
    if args.synthetic:
        sources.append((f"synthetic (seed {args.seed})", synthetic(args.synthetic, args.epochs, args.seed)))
    if not sources:
        parser.error("give --curves, --storage with --study-name, or --synthetic N")
    if len(sources) == 1:
        curves = sources[0][1]
    else:  # trial numbers clash across sources: number them in turn, each source in its own order
        merged = [curves for _, source in sources for _, curves in sorted(source.items())]
        curves = dict(enumerate(merged))
    curves = {number: curve for number, curve in curves.items() if curve}
    if not curves:
        parser.error("no trial has any epoch record")
    curves, left_out = full_length(curves)
    budget = max(curve[-1].epoch for curve in curves.values())

    reference = reference_point(curves)
    rungs = rung_epochs(args.min_epochs, args.reduction_factor, budget)
    print(
        f"{len(curves)} trials x {budget} epochs from {', '.join(name for name, _ in sources)}"
        + (f" ({left_out} shorter trials left out)" if left_out else "")
    )
    print(
        f"rungs at epochs {rungs}, keep 1/{args.reduction_factor}, min {args.min_peers} peers, "
        f"rate tolerance {args.rate_tolerance}; "
        f"HV reference (bpp {reference[0]:.4f}, 1-MS-SSIM {reference[1]:.5f})"
    )
    rows = {}
    for name in PRUNERS:
        pruner = build_mo_pruner(
            name,
            min_epochs=args.min_epochs,
            reduction_factor=args.reduction_factor,
            min_peers=args.min_peers,
            max_epochs=budget,
            rate_tolerance=args.rate_tolerance,
        )
        rows[name] = score(curves, replay(curves, pruner), reference)
    print(table(rows, len(curves)))
    print("target: HV ratio >= 0.95 at >= 50 % of trial-epochs saved")


if __name__ == "__main__":
    main()
