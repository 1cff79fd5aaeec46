from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shrink.search.pruning import (
    PRUNERS,
    EpochPoint,
    GainHalvingPruner,
    NopMOPruner,
    ParetoRankPruner,
    PruneDecision,
    _dominates,
    build_mo_pruner,
    hypervolume_2d,
    non_dominated_fronts,
    replay,
    rung_epochs,
)

REPO = Path(__file__).resolve().parents[1]


def flat(epochs: int, bpp: float, msssim: float, gain: float) -> list[EpochPoint]:
    """A curve that sits at the same point for ``epochs`` epochs."""
    return [EpochPoint(e, bpp, msssim, gain) for e in range(1, epochs + 1)]


def at_epoch_one(rows: list[tuple[float, float, float]]) -> dict[int, list[EpochPoint]]:
    """Trials 0..n-1 with one epoch each, from (bpp, msssim, gain) rows."""
    return {number: flat(1, *row) for number, row in enumerate(rows)}


# trial 2 is cheap and Pareto-optimal but has a low gain; 3, 4, 5 are dominated by trial 0
RUNG_ONE = [
    (0.50, 0.950, 0.60),
    (0.55, 0.955, 0.70),
    (0.30, 0.940, 0.20),
    (0.60, 0.930, -0.30),
    (0.70, 0.945, 0.00),
    (0.65, 0.935, -0.10),
]


def test_pareto_keeps_a_cheaper_trial_that_gain_halving_prunes() -> None:
    curves = at_epoch_one(RUNG_ONE)
    pareto, gain = ParetoRankPruner(), GainHalvingPruner()
    assert pareto.decide(2, curves) is None
    pruned_by_gain = gain.decide(2, curves)
    assert pruned_by_gain is not None and pruned_by_gain.value == pytest.approx(0.20)
    assert pruned_by_gain.threshold == pytest.approx(0.60)  # the 2nd best of 6 with eta 3
    for dominated in (3, 4, 5):
        decision = pareto.decide(dominated, curves)
        assert decision is not None
        assert (decision.rung, decision.epoch, decision.value, decision.threshold, decision.peers) == (
            0,
            1,
            1.0,
            0.0,
            6,
        )
    assert pareto.decide(0, curves) is None and pareto.decide(1, curves) is None


def test_rate_tolerance_prunes_the_worse_of_two_trials_at_one_operating_point() -> None:
    # trial 1 has a hair fewer bytes than trial 0 but clearly lower MS-SSIM: plain dominance keeps both
    rows = [(0.300, 0.950, 1.3), (0.298, 0.940, 1.0), (0.10, 0.88, 2.5), (0.80, 0.98, 0.1)]
    curves = at_epoch_one(rows)
    assert ParetoRankPruner().decide(1, curves) is None
    decision = ParetoRankPruner(rate_tolerance=0.05).decide(1, curves)
    assert decision is not None and decision.value == 1.0
    assert all(ParetoRankPruner(rate_tolerance=0.05).decide(n, curves) is None for n in (0, 2, 3))
    assert non_dominated_fronts([(0.300, 0.05), (0.298, 0.06)], rate_tolerance=0.05) == [[0], [1]]
    assert non_dominated_fronts([(0.300, 0.05), (0.250, 0.06)], rate_tolerance=0.05) == [[0, 1]]
    with pytest.raises(ValueError, match="rate_tolerance"):
        ParetoRankPruner(rate_tolerance=-0.1)


def test_pareto_breaks_ties_in_the_cut_front_by_crowding_distance() -> None:
    rows = [(0.30, 0.990, 0.0)]  # front 0: dominates everything
    front_one = [(0.40, 0.950), (0.50, 0.960), (0.51, 0.961), (0.60, 0.970), (0.70, 0.980)]
    rows += [(bpp, ms, 0.0) for bpp, ms in front_one]  # trials 1-5; 1 and 5 are its ends
    rows += [(0.80, 0.94, 0.0), (0.90, 0.93, 0.0), (0.95, 0.92, 0.0)]  # trials 6-8 on front 1 or worse
    curves = at_epoch_one(rows)
    pruner = ParetoRankPruner()  # 9 peers, keeps 3: trial 0 and the two ends of front 1
    assert [n for n in curves if pruner.decide(n, curves) is None] == [0, 1, 5]
    interior = pruner.decide(3, curves)
    assert interior is not None and interior.value == interior.threshold == 1.0
    assert "tie-break" in interior.reason()
    worse = pruner.decide(8, curves)
    assert worse is not None and worse.value > worse.threshold == 1.0


def test_gain_halving_keeps_the_top_third_and_prunes_the_rest() -> None:
    gains = [0.1, -0.5, 0.9, 0.3, -0.2, 0.7, 0.0, 0.5, -0.9]
    curves = at_epoch_one([(0.5, 0.95, g) for g in gains])
    pruner = GainHalvingPruner(reduction_factor=3)
    decisions = {n: pruner.decide(n, curves) for n in curves}
    assert sorted(n for n, d in decisions.items() if d is None) == [2, 5, 7]  # gains 0.9, 0.7, 0.5
    worst = decisions[8]
    assert worst is not None and worst.value == -0.9 and worst.threshold == 0.5 and worst.peers == 9
    assert GainHalvingPruner(reduction_factor=2).decide(3, curves) is None  # 0.3 is 5th of 9: kept at eta 2


def test_no_pruning_below_min_peers() -> None:
    rows = [(0.5, 0.97, 1.0), (0.9, 0.90, -2.0)]  # trial 1 is worse in every way
    for pruner in (GainHalvingPruner(min_peers=3), ParetoRankPruner(min_peers=3)):
        assert pruner.decide(1, at_epoch_one(rows)) is None
        assert pruner.decide(1, at_epoch_one([*rows, (0.6, 0.96, 0.5)])) is not None
    assert GainHalvingPruner(min_peers=2).decide(1, at_epoch_one(rows)) is not None


def test_non_rung_epochs_never_prune() -> None:
    curves = {n: flat(9, 0.5, 0.95, float(n)) for n in range(1, 9)}
    curves[0] = flat(9, 0.9, 0.90, -5.0)  # the worst at every epoch
    pruner = GainHalvingPruner(min_epochs=1, reduction_factor=3)
    verdicts = {epoch: pruner.decide(0, {**curves, 0: curves[0][:epoch]}) for epoch in range(1, 10)}
    assert [e for e, d in verdicts.items() if d is not None] == [1, 3, 9]
    assert [verdicts[e].rung for e in (1, 3, 9)] == [0, 1, 2]
    bounded = GainHalvingPruner(min_epochs=1, reduction_factor=3, max_epochs=9)
    assert bounded.decide(0, curves) is None  # the last epoch is no rung
    late = GainHalvingPruner(min_epochs=2, reduction_factor=2)
    assert [e for e in range(1, 10) if late.decide(0, {**curves, 0: curves[0][:e]})] == [2, 4, 8]


def test_rung_epochs() -> None:
    assert rung_epochs(1, 3, 27) == [1, 3, 9]
    assert rung_epochs(1, 3, 28) == [1, 3, 9, 27]
    assert rung_epochs(2, 2, 20) == [2, 4, 8, 16]
    assert rung_epochs(5, 3, 5) == []
    assert GainHalvingPruner(min_epochs=1, reduction_factor=3).rung_of(81) == 4
    with pytest.raises(ValueError, match="reduction_factor"):
        rung_epochs(1, 1, 10)
    with pytest.raises(ValueError, match="min_epochs"):
        GainHalvingPruner(min_epochs=0)


def test_decision_reason_names_rung_value_and_threshold() -> None:
    decision = PruneDecision("gain-halving", rung=1, epoch=3, value=-0.41, threshold=-0.12, peers=7)
    reason = decision.reason()
    for part in ("rung 1", "epoch 3", "-0.410 dB", "-0.120 dB", "7 trials"):
        assert part in reason
    assert decision.to_dict() == {
        "pruner": "gain-halving",
        "rung": 1,
        "epoch": 3,
        "value": -0.41,
        "threshold": -0.12,
        "peers": 7,
        "reason": reason,
    }
    front = PruneDecision("pareto-halving", rung=0, epoch=1, value=2.0, threshold=1.0, peers=9).reason()
    assert "front 2" in front and "front 1" in front and "rung 0" in front
    real = GainHalvingPruner().decide(0, at_epoch_one([(0.5, 0.95, 0.1 * n - 0.35) for n in range(9)]))
    assert real is not None and "gain -0.350 dB < threshold +0.250 dB" in real.reason()


def test_non_dominated_fronts_by_hand() -> None:
    points = [(1, 5), (2, 3), (4, 1), (3, 4), (5, 2), (5, 5), (2, 3), (6, 6)]
    assert non_dominated_fronts(points) == [[0, 1, 2, 6], [3, 4], [5], [7]]
    assert non_dominated_fronts([]) == []


def pairwise_fronts(points, rate_tolerance: float) -> list[list[int]]:
    """Non-dominated sorting by the definition: every pair compared (the O(n^2) reference)."""
    left, fronts = set(range(len(points))), []
    while left:
        front = sorted(
            b
            for b in left
            if not any(_dominates(points[a], points[b], rate_tolerance) for a in left if a != b)
        )
        fronts.append(front)
        left -= set(front)
    return fronts


@pytest.mark.parametrize("seed", range(40))
def test_non_dominated_fronts_match_pairwise_comparison(seed: int) -> None:
    """Ties, repeats, infinities (a NaN objective) and a rate tolerance, as a rung meets them."""
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 60))
    bpp = rng.choice([0.1, 0.2, 0.2, 0.3, 0.31, math.inf], count) if seed % 2 else rng.uniform(0, 1, count)
    quality = rng.choice([-0.9, -0.8, -0.8, math.inf], count) if seed % 3 == 0 else rng.uniform(-1, 0, count)
    points = [(float(b), float(q)) for b, q in zip(bpp, quality, strict=True)]
    tolerance = [0.0, 0.02, 0.5][seed % 3]
    assert non_dominated_fronts(points, tolerance) == pairwise_fronts(points, tolerance)


def test_hypervolume_2d_by_hand() -> None:
    staircase = [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]
    assert hypervolume_2d(staircase, (4.0, 4.0)) == pytest.approx(3 + 2 + 1)
    noisy = [*staircase, (2.5, 2.5), (5.0, 0.5), (0.5, 4.0), (2.0, 2.0), (math.nan, 0.0)]
    assert hypervolume_2d(noisy, (4.0, 4.0)) == pytest.approx(6.0)  # dominated or outside: nothing added
    assert hypervolume_2d([(0.5, 0.5)], (1.0, 2.0)) == pytest.approx(0.75)
    assert hypervolume_2d([], (1.0, 1.0)) == 0.0


def population() -> dict[int, list[EpochPoint]]:
    """12 trials x 9 epochs; trial 10 is best throughout, trials 0, 5 good; the rest lose from epoch 1 on."""
    curves = {}
    for number in range(12):
        good = number in (0, 5, 10)
        best = number == 10
        curve = []
        for epoch in range(1, 10):
            progress = 1 - math.exp(-epoch / 3)
            gain = (1.0 if best else 0.6 if good else -0.5 - 0.05 * number) * progress
            bpp = (0.40 if best else 0.45 if good else 0.70 + 0.01 * number) + 0.1 * (1 - progress)
            msssim = (0.97 if best else 0.96 if good else 0.90 - 0.002 * number) * (0.98 + 0.02 * progress)
            curve.append(EpochPoint(epoch, bpp, msssim, gain))
        curves[number] = curve
    return curves


@pytest.mark.parametrize("name", ["gain-halving", "pareto-halving"])
def test_replay_saves_epochs_and_never_prunes_the_best(name: str) -> None:
    curves = population()
    epochs_run = replay(curves, build_mo_pruner(name, max_epochs=9))
    assert epochs_run[10] == 9
    assert sum(epochs_run.values()) <= 0.6 * 12 * 9
    assert all(epochs_run[n] < 9 for n in curves if n not in (0, 1, 5, 10))
    assert replay(curves, NopMOPruner()) == dict.fromkeys(curves, 9)


def test_replay_only_sees_trials_already_run() -> None:
    curves = population()
    losers_first = [2, 3, 4, 0, 5, 10]
    epochs_run = replay(curves, GainHalvingPruner(max_epochs=9), order=losers_first)
    assert list(epochs_run) == losers_first
    assert epochs_run[2] == epochs_run[3] == 9  # judged among fewer than 3 trials: no evidence yet
    assert epochs_run[4] < 9  # the worst of 2, 3, 4 at rung 0


def test_epoch_point_from_record() -> None:
    record = {"epoch": 3, "dev_bpp": 0.5, "dev_msssim": 0.95, "dev_gain_db": 0.25, "dev_psnr": 30.0}
    assert EpochPoint.from_record(record) == EpochPoint(3, 0.5, 0.95, 0.25)
    with pytest.raises(ValueError, match="dev_gain_db"):
        EpochPoint.from_record({"epoch": 1, "dev_bpp": 0.5, "dev_msssim": 0.9})


def test_build_mo_pruner() -> None:
    assert set(PRUNERS) == {"none", "gain-halving", "pareto-halving"}
    pruner = build_mo_pruner("pareto-halving", min_peers=5, reduction_factor=4)
    assert isinstance(pruner, ParetoRankPruner) and pruner.min_peers == 5 and pruner.reduction_factor == 4
    assert build_mo_pruner("none", min_epochs=2).name == "none"
    with pytest.raises(ValueError, match="gain-halving.*pareto-halving"):
        build_mo_pruner("hyperband")
    with pytest.raises(ValueError, match="gain-halving"):
        build_mo_pruner("gain-halving", patience=3)


def test_pruning_module_does_not_import_optuna() -> None:
    code = "import sys, shrink.search.pruning; print('optuna' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_benchmark_prints_saving_and_hypervolume_ratio_per_pruner(tmp_path: Path) -> None:
    script = REPO / "benchmarks" / "pruning.py"
    synthetic = subprocess.run(
        [sys.executable, str(script), "--synthetic", "20"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert synthetic.returncode == 0, synthetic.stderr
    row = re.compile(r"^(\S+)\s+(\d+)/(\d+)\s+(-?[\d.]+)%\s+\d+/\d+\s+[\d.]+\s+[\d.]+\s+([\d.]+)\s", re.M)
    rows = {m[1]: m for m in row.finditer(synthetic.stdout)}
    assert set(rows) == set(PRUNERS), synthetic.stdout
    assert rows["none"][4] == "0.0" and rows["none"][5] == "1.000"
    assert int(rows["gain-halving"][2]) < int(rows["gain-halving"][3])

    records = {str(n): [vars(p) for p in curve] for n, curve in population().items()}
    path = tmp_path / "curves.json"
    path.write_text(json.dumps({"trials": records}))
    from_file = subprocess.run(
        [sys.executable, str(script), "--curves", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert from_file.returncode == 0, from_file.stderr
    assert "12 trials x 9 epochs" in from_file.stdout
    assert set(m[1] for m in row.finditer(from_file.stdout)) == set(PRUNERS)
