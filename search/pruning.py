"""Multi-objective pruners that judge a trial by its per-epoch learning curve against every other trial's.

Optuna cannot prune multi-objective trials, so the search prunes them itself: after each epoch a trial records
an :class:`EpochPoint` (dev bpp, dev MS-SSIM, dev gain over JPEG at matched bpp) and asks a
:class:`MultiObjectivePruner` whether to go on. Both real pruners are asynchronous successive halving
(ASHA): rungs sit at epochs ``min_epochs * reduction_factor**k``; a trial whose latest epoch is a rung epoch
is compared with every trial that reached that epoch (complete, pruned or running, itself included) and kept
only when it is in the top ``ceil(n / reduction_factor)``.

- ``gain-halving`` ranks by dev gain over JPEG (one number, higher better).
- ``pareto-halving`` ranks by Pareto front of (dev bpp, dev MS-SSIM), in the spirit of MOASHA (Schmucker et
  al. 2021): front index first, then NSGA-II crowding distance (larger first) inside the front the cut falls
  in, then the lower trial number. A trial on the first front is never pruned.

A study that also minimises the decoder's cost (``objective.decoder_cost = "objective"``) is still pruned on
(dev bpp, dev MS-SSIM) alone: the cost is fixed per trial (set by its sampled model, recorded before training,
never changed by an epoch), so it says nothing about how a trial is learning; a trial over
``max_decoder_macs_per_pixel`` is pruned by the trial runner before its first step, not here.

Pure python + numpy: optuna is not imported here, so the pruners are testable without a storage.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

RECORD_KEYS = ("epoch", "dev_bpp", "dev_msssim", "dev_gain_db")


@dataclass(frozen=True)
class EpochPoint:
    """One epoch of one trial: what the pruners look at."""

    epoch: int
    dev_bpp: float
    dev_msssim: float
    dev_gain_db: float

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> EpochPoint:
        """The point of an epoch record; extra keys beyond :data:`RECORD_KEYS` are ignored."""
        missing = [key for key in RECORD_KEYS if key not in record]
        if missing:
            present = ", ".join(sorted(map(str, record)))
            raise ValueError(f"epoch record lacks {', '.join(missing)} (has {present})")
        return cls(
            epoch=int(record["epoch"]),
            dev_bpp=float(record["dev_bpp"]),
            dev_msssim=float(record["dev_msssim"]),
            dev_gain_db=float(record["dev_gain_db"]),
        )


Curves = Mapping[int, Sequence[EpochPoint]]


@dataclass(frozen=True)
class PruneDecision:
    """Why a trial was pruned: the rung, its value there and the cut-off it failed among ``peers`` trials."""

    pruner: str
    rung: int
    epoch: int
    value: float
    threshold: float
    peers: int

    def reason(self) -> str:
        """e.g. ``pruned at rung 1 (epoch 3): gain -0.410 dB < threshold -0.120 dB among 7 trials``."""
        explain = _EXPLAIN.get(self.pruner, _explain_generic)
        return f"pruned at rung {self.rung} (epoch {self.epoch}): {explain(self)} among {self.peers} trials"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reason": self.reason()}


def _explain_gain(decision: PruneDecision) -> str:
    return f"gain {decision.value:+.3f} dB < threshold {decision.threshold:+.3f} dB"


def _explain_front(decision: PruneDecision) -> str:
    value, threshold = int(decision.value), int(decision.threshold)
    if value > threshold:
        return f"Pareto front {value} > worst kept front {threshold}"
    return f"Pareto front {value} = worst kept front {threshold}, lost the crowding-distance tie-break"


def _explain_generic(decision: PruneDecision) -> str:
    return f"value {decision.value:.4g} failed threshold {decision.threshold:.4g}"


_EXPLAIN: dict[str, Callable[[PruneDecision], str]] = {
    "gain-halving": _explain_gain,
    "pareto-halving": _explain_front,
}


class MultiObjectivePruner(abc.ABC):
    name: str

    @abc.abstractmethod
    def decide(self, trial_number: int, curves: Curves) -> PruneDecision | None:
        """Prune ``trial_number`` now? Called right after its latest epoch was recorded.

        ``curves`` maps trial number to its recorded epochs so far, for every trial of the study (complete,
        pruned, running, this one included). Returns a decision to prune, or None to continue.
        """

    def judges_at(self, epoch: int) -> bool:
        """Whether :meth:`decide` may prune after ``epoch`` (else the study's curves need not be read)."""
        return True


class NopMOPruner(MultiObjectivePruner):
    """Never prunes. Takes the halving pruners' keywords (and ignores them) so a spec can swap names."""

    name = "none"

    def __init__(
        self,
        min_epochs: int = 1,
        reduction_factor: int = 3,
        min_peers: int = 3,
        max_epochs: int | None = None,
        rate_tolerance: float = 0.0,
    ) -> None:
        pass

    def decide(self, trial_number: int, curves: Curves) -> PruneDecision | None:
        return None

    def judges_at(self, epoch: int) -> bool:
        return False

    def __repr__(self) -> str:
        return "NopMOPruner()"


def _check_rungs(min_epochs: int, reduction_factor: int, max_epochs: int | None = None) -> None:
    if min_epochs < 1:
        raise ValueError(f"min_epochs must be >= 1 (got {min_epochs})")
    if reduction_factor < 2:
        raise ValueError(f"reduction_factor must be >= 2 (got {reduction_factor})")
    if max_epochs is not None and max_epochs < 1:
        raise ValueError(f"max_epochs must be >= 1 (got {max_epochs})")


def rung_epochs(min_epochs: int, reduction_factor: int, max_epochs: int) -> list[int]:
    """The rung epochs ``min_epochs * reduction_factor**k`` below ``max_epochs`` (the last is no rung)."""
    _check_rungs(min_epochs, reduction_factor, max_epochs)
    epochs: list[int] = []
    epoch = min_epochs
    while epoch < max_epochs:
        epochs.append(epoch)
        epoch *= reduction_factor
    return epochs


def _at_epoch(curve: Sequence[EpochPoint], epoch: int) -> EpochPoint | None:
    """The point recorded for ``epoch`` (the latest one if a resumed trial recorded it twice)."""
    for point in reversed(curve):
        if point.epoch == epoch:
            return point
    return None


class _HalvingPruner(MultiObjectivePruner):
    """ASHA's bookkeeping: which epoch is a rung, who reached it, and whether there is enough evidence."""

    def __init__(
        self,
        min_epochs: int = 1,
        reduction_factor: int = 3,
        min_peers: int = 3,
        max_epochs: int | None = None,
        rate_tolerance: float = 0.0,
    ) -> None:
        _check_rungs(min_epochs, reduction_factor, max_epochs)
        if min_peers < 1:
            raise ValueError(f"min_peers must be >= 1 (got {min_peers})")
        if rate_tolerance < 0:
            raise ValueError(f"rate_tolerance must be >= 0 (got {rate_tolerance})")
        self.rate_tolerance = rate_tolerance
        self.min_epochs = min_epochs
        self.reduction_factor = reduction_factor
        self.min_peers = min_peers
        self.max_epochs = max_epochs

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(min_epochs={self.min_epochs}, reduction_factor={self.reduction_factor}, "
            f"min_peers={self.min_peers}, max_epochs={self.max_epochs})"
        )

    def rung_of(self, epoch: int) -> int | None:
        """The rung index k of ``epoch`` if it is ``min_epochs * reduction_factor**k`` (below max_epochs)."""
        if epoch < self.min_epochs or epoch % self.min_epochs:
            return None
        if self.max_epochs is not None and epoch >= self.max_epochs:
            return None
        quotient, rung = epoch // self.min_epochs, 0
        while quotient % self.reduction_factor == 0:
            quotient //= self.reduction_factor
            rung += 1
        return rung if quotient == 1 else None

    def judges_at(self, epoch: int) -> bool:
        return self.rung_of(epoch) is not None

    def keep_count(self, peers: int) -> int:
        return math.ceil(peers / self.reduction_factor)

    def decide(self, trial_number: int, curves: Curves) -> PruneDecision | None:
        curve = curves.get(trial_number)
        if not curve:
            return None
        epoch = curve[-1].epoch
        rung = self.rung_of(epoch)
        if rung is None:
            return None
        reached = ((number, _at_epoch(other, epoch)) for number, other in curves.items())
        peers = {number: point for number, point in reached if point is not None}
        if len(peers) < self.min_peers:
            return None
        return self.judge(trial_number, rung, epoch, peers)

    @abc.abstractmethod
    def judge(
        self, trial_number: int, rung: int, epoch: int, peers: Mapping[int, EpochPoint]
    ) -> PruneDecision | None:
        """The verdict at a rung, given each trial's point at the rung epoch (``trial_number`` among them)."""


class GainHalvingPruner(_HalvingPruner):
    """ASHA on dev gain over JPEG: keep the top ``ceil(n / reduction_factor)`` gains at each rung.

    Ties with the cut-off gain are kept. A NaN gain ranks below every number.
    """

    name = "gain-halving"

    def judge(
        self, trial_number: int, rung: int, epoch: int, peers: Mapping[int, EpochPoint]
    ) -> PruneDecision | None:
        gains = {number: _or_inf(-point.dev_gain_db) for number, point in peers.items()}  # minimised
        cut = sorted(gains.values())[self.keep_count(len(gains)) - 1]
        if gains[trial_number] <= cut:
            return None
        value = peers[trial_number].dev_gain_db
        return PruneDecision(self.name, rung, epoch, float(value), float(-cut), len(peers))


class ParetoRankPruner(_HalvingPruner):
    """ASHA on Pareto rank of (dev bpp minimised, dev MS-SSIM maximised), after MOASHA.

    Trials at a rung are ordered by non-dominated front, then by crowding distance (larger first; the two
    ends of a front have infinite distance), then by trial number; the first ``ceil(n / reduction_factor)``
    are kept, and so is every trial on the first front. The decision's value is the trial's front index
    (0 = non-dominated) and its threshold the worst front index kept. A NaN bpp or MS-SSIM counts as the worst
    possible.
    """

    name = "pareto-halving"

    def judge(
        self, trial_number: int, rung: int, epoch: int, peers: Mapping[int, EpochPoint]
    ) -> PruneDecision | None:
        numbers = sorted(peers)
        points = [(_or_inf(peers[n].dev_bpp), _or_inf(-peers[n].dev_msssim)) for n in numbers]
        order: list[int] = []
        front_of: dict[int, int] = {}
        for index, front in enumerate(non_dominated_fronts(points, self.rate_tolerance)):
            distances = crowding_distances([points[i] for i in front])
            ranked = sorted(range(len(front)), key=lambda j: (-distances[j], numbers[front[j]]))
            for j in ranked:
                order.append(numbers[front[j]])
                front_of[numbers[front[j]]] = index
        keep = self.keep_count(len(order))
        if front_of[trial_number] == 0 or trial_number in order[:keep]:
            return None
        value, threshold = front_of[trial_number], front_of[order[keep - 1]]
        return PruneDecision(self.name, rung, epoch, float(value), float(threshold), len(order))


def _or_inf(value: float) -> float:
    """``value`` for a minimised objective, with NaN as the worst (+inf)."""
    return math.inf if math.isnan(value) else value


def _dominates(a: Sequence[float], b: Sequence[float], rate_tolerance: float = 0.0) -> bool:
    """``a`` is no worse than ``b`` in both (the first within a factor ``1 + rate_tolerance``), better in one.

    The tolerance makes a trial at 1 % more bytes but better quality dominate one at the same JPEG quality
    that is worse: bpp differences that small are noise between trials trained at one quality. Along any
    chain of dominance the second objective never rises and ties need a strictly lower first one, so the
    relation stays acyclic.
    """
    no_worse = a[0] <= b[0] * (1 + rate_tolerance) and a[1] <= b[1]
    return no_worse and (a[0] < b[0] or a[1] < b[1])


def non_dominated_fronts(
    points: Sequence[tuple[float, float]], rate_tolerance: float = 0.0
) -> list[list[int]]:
    """Fronts of point indices by non-dominated sorting, both objectives minimised (negate one to maximise).

    Front 0 holds the points no other point dominates, front 1 those only front 0 dominates, and so on; equal
    points share a front. Indices within a front are ascending. ``rate_tolerance``: see :func:`_dominates`
    (the first objective is a rate: not negative).

    O(n log n): a rung of a 10,000-trial study is judged at every report, where comparing every pair took
    seconds. A point's front is one more than the highest front among the points that dominate it (peeling
    fronts off a DAG numbers each node by its longest chain). Sorted by (second, first) objective, every
    dominator of ``b`` comes before it, and among those before it the dominators are exactly the points with
    a first objective at most ``b0 * (1 + rate_tolerance)``, points equal to ``b`` aside: a prefix-maximum
    query over first-objective ranks (a Fenwick tree).
    """
    if not points:
        return []
    values = np.asarray(points, dtype=float).reshape(-1, 2)
    firsts = np.unique(values[:, 0])
    reach = np.searchsorted(firsts, values[:, 0] * (1 + rate_tolerance), side="right").tolist()
    rank = (np.searchsorted(firsts, values[:, 0]) + 1).tolist()  # 1-based, as the tree counts
    order = np.lexsort((values[:, 0], values[:, 1])).tolist()
    rows = [tuple(row) for row in values.tolist()]
    tree = [0] * (len(firsts) + 1)  # prefix maximum of (front + 1) by first-objective rank
    front_of = [0] * len(rows)
    start = 0
    while start < len(order):  # a group of equal points: one query, then one insert
        end = start + 1
        while end < len(order) and rows[order[end]] == rows[order[start]]:
            end += 1
        best, position = 0, reach[order[start]]
        while position > 0:
            best = max(best, tree[position])
            position -= position & -position
        for index in order[start:end]:
            front_of[index] = best
        position = rank[order[start]]
        while position < len(tree):
            tree[position] = max(tree[position], best + 1)
            position += position & -position
        start = end
    fronts: list[list[int]] = [[] for _ in range(max(front_of) + 1)]
    for index, front in enumerate(front_of):
        fronts[front].append(index)
    return fronts


def crowding_distances(points: Sequence[tuple[float, float]]) -> list[float]:
    """NSGA-II crowding distance of each point of one front: infinite at the ends of each objective's range,
    otherwise the sum over objectives of the gap between its neighbours over that objective's span."""
    if len(points) <= 2:
        return [math.inf] * len(points)
    array = np.asarray(points, dtype=np.float64)
    distances = np.zeros(len(points))
    for column in array.T:
        order = np.argsort(column, kind="stable")
        distances[order[0]] = distances[order[-1]] = math.inf
        span = column[order[-1]] - column[order[0]]
        if not np.isfinite(span) or span <= 0:
            continue
        gaps = (column[order[2:]] - column[order[:-2]]) / span
        distances[order[1:-1]] += gaps
    return [float(d) for d in distances]


def hypervolume_2d(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` and bounded by ``reference``, both objectives minimised.

    Points that do not strictly dominate the reference (or are not finite) contribute nothing.
    """
    ref_x, ref_y = reference
    inside = sorted(
        (x, y) for x, y in points if math.isfinite(x) and math.isfinite(y) and x < ref_x and y < ref_y
    )
    area, ceiling = 0.0, ref_y
    for x, y in inside:  # by x ascending: each point adds the strip below the lowest y seen so far
        if y < ceiling:
            area += (ref_x - x) * (ceiling - y)
            ceiling = y
    return area


def replay(
    curves: Curves, pruner: MultiObjectivePruner, order: Sequence[int] | None = None
) -> dict[int, int]:
    """Simulate one worker running the trials of ``curves`` one after another through ``pruner``.

    Trials run in ``order`` (default: by number); after each epoch the pruner sees the full curves of the
    trials already run (as far as they got) and this trial's epochs so far. Returns trial number -> the last
    epoch it ran (its full length if never pruned).
    """
    seen: dict[int, list[EpochPoint]] = {}
    epochs_run: dict[int, int] = {}
    for number in sorted(curves) if order is None else order:
        seen[number] = run = []
        for point in curves[number]:
            run.append(point)
            if pruner.decide(number, seen) is not None:
                break
        epochs_run[number] = run[-1].epoch if run else 0
    return epochs_run


PRUNERS: dict[str, type[MultiObjectivePruner]] = {
    NopMOPruner.name: NopMOPruner,
    GainHalvingPruner.name: GainHalvingPruner,
    ParetoRankPruner.name: ParetoRankPruner,
}


def build_mo_pruner(name: str, **kwargs: Any) -> MultiObjectivePruner:
    """The pruner registered as ``name`` in :data:`PRUNERS`, built with ``kwargs``."""
    if name not in PRUNERS:
        raise ValueError(f"unknown pruner {name!r}; known pruners: {', '.join(PRUNERS)}")
    try:
        return PRUNERS[name](**kwargs)
    except TypeError as error:
        raise ValueError(f"pruner {name!r}: {error}") from None
