"""What a trial and a study store: every attribute's name, and a pydantic model for each structured value.

Every reader and writer in ``search`` and ``dashboards`` names an attribute through the constants here
(``tests/test_records.py`` fails on a stray literal). The models serialise to the JSON stored today, key for
key and in the same order, so studies written before this module load unchanged; fields added over time have
defaults, absent from older trials. No Optuna import: records are read from anything with ``user_attrs``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from shrink.compression.rd import RDCurve

# ---------------------------------------------------------------- study user attributes
SPEC_ATTR = "shrink_spec"
TICKETS_ATTR = "budget_tickets"
DEV_JPEG_ATTR = "dev_jpeg"  # the dev JPEG curve (RDCurve dict)
DEV_FINGERPRINT_ATTR = "dev_fingerprint"  # sha256 of the dev images' names and bytes
SEARCH_FIDELITY_ATTR = "search_fidelity"  # a refine study's parent's training fidelity (refine.fidelity)

# ---------------------------------------------------------------- study system attributes
TICKET_WINDOW_ATTR = "shrink_ticket_window"  # TicketWindow: the budget's tickets issued so far (lazily)

# ---------------------------------------------------------------- trial user attributes
# set once per trial before training (shrink.compression.cost.config_cost)
DECODER_MACS_ATTR = "decoder_macs_per_pixel"
DECODER_PARAMS_ATTR = "decoder_params"
DECODER_LIMIT_ATTR = "decoder_over_limit"  # a trial pruned untrained: DecoderOverLimit
# where and how the trial trains
ORIGINAL_TRIAL_ATTR = "original_trial"  # the trial whose run folder a retry resumes
RUN_DIR_ATTR = "run_dir"
DEVICE_ATTR = "device"
EPOCHS_ATTR = "epochs"  # one EpochSummary per epoch, partial ones included
# the result: the best epoch (the one the checkpoint holds)
RD_POINT_ATTR = "rd_point"  # EpochSummary
DEV_POINTS_ATTR = "dev_points"  # the best epoch's point per dev quality (list of dicts)
CHECKPOINT_ATTR = "checkpoint"
WALL_S_ATTR = "wall_s"  # training seconds, across resumes
WORKER_WALL_S_ATTR = "worker_wall_s"  # seconds in this worker, loading included
# verdicts
FAIL_REASON_ATTR = "fail_reason"
INTERRUPTED_PREFIX = "interrupted"  # the fail_reason of a trial a signal stopped (and re-queued) starts so
PRUNE_REASON_ATTR = "prune_reason"
PRUNED_ATTR = "pruned"  # PrunedRecord, from a multi-objective pruner
PREVIOUS_FAIL_ATTR = "previous_fail_reason"  # a retry's predecessor's fail_reason
VERDICT_ATTRS = (FAIL_REASON_ATTR, PRUNE_REASON_ATTR, PRUNED_ATTR)  # what a retry drops
# refined trials (shrink refine)
TEST_CURVE_ATTR = "test_curve"  # a refined trial's RD curve on [test].data (RDCurve dict), measured once
PARENT_STUDY_ATTR = "parent_study"  # a refined trial's (and a refine study's) parent study name
PARENT_TRIAL_ATTR = "parent_trial"  # a refined trial's parent trial number
PARENT_VALUES_ATTR = "parent_values"  # ParentValues: the parent's values and dev gain at search fidelity

# ---------------------------------------------------------------- trial system attributes
TICKET_ATTR = "shrink_ticket"  # the ticket's index (0..n_trials-1), inherited by retries
JOURNAL_HEARTBEAT_ATTR = "shrink_heartbeat"
CREATE_TOKEN_ATTR = "shrink_create_token"
# Optuna's own, read (never written) by the budget and the retry bookkeeping
RETRY_HISTORY_ATTR = "retry_history"  # RetryFailedTrialCallback: the numbers a retry descends from
FAILED_TRIAL_ATTR = "failed_trial"  # RetryFailedTrialCallback: the trial a retry re-runs
FIXED_PARAMS_ATTR = "fixed_params"  # Study.enqueue_trial: the params a WAITING trial will run with

STORED_NAMES = frozenset(value for name, value in dict(globals()).items() if name.endswith("_ATTR"))


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EpochSummary(_Record):
    """What a trial keeps per epoch (``epochs``) and of its best epoch (``rd_point``): the learning curve the
    pruners and reports read. Built from a trainer's EpochRecord by :meth:`of`."""

    epoch: int
    step: int
    seconds: float
    dev_bpp: float
    dev_msssim: float
    dev_msssim_db: float
    dev_psnr: float
    dev_gain_db: float
    dev_rate_change: float | None = None  # rd.operating_rate_change; absent before it was stored
    rolled_back: bool = False
    com_baseline_gain_db: float | None = None  # absent before the guard stored it
    partial: bool = False

    @classmethod
    def of(cls, record: Any) -> EpochSummary:
        """The summary of an object with these fields as attributes (a trainer's EpochRecord)."""
        values = {name: getattr(record, name) for name in cls.model_fields}
        return cls(**{**values, "seconds": round(values["seconds"], 3)})


class PrunedRecord(_Record):
    """Why a multi-objective pruner stopped a trial (``pruning.PruneDecision.to_dict``)."""

    pruner: str
    rung: int
    epoch: int
    value: float
    threshold: float
    peers: int
    reason: str


class DecoderOverLimit(_Record):
    """A trial pruned before training: its decoder's MACs per pixel and the spec's limit."""

    decoder_macs_per_pixel: float
    max: float


class ParentValues(_Record):
    """A refined trial's parent's objective values and dev gain, at search fidelity."""

    values: list[float] | None
    dev_gain_db: float | None


class TrialResult(_Record):
    """A completed trial's result: its best epoch's dev RD point, params and decoder cost. The report's
    trial points (``dashboards.study_info.TrialPoint``) and the front table (``results.FrontRow``) extend
    it."""

    number: int
    params: dict
    point: EpochSummary
    decoder_macs_per_pixel: float | None = None

    @property
    def bpp(self) -> float:
        return self.point.dev_bpp

    @property
    def msssim(self) -> float:
        return self.point.dev_msssim

    @property
    def msssim_db(self) -> float:
        return self.point.dev_msssim_db

    @property
    def psnr(self) -> float:
        return self.point.dev_psnr

    @property
    def gain_db(self) -> float:
        """The stored dev gain (rd.operating_gain: dB over JPEG at the point's bpp), not recomputed."""
        return self.point.dev_gain_db

    @property
    def rate_change(self) -> float | None:
        return self.point.dev_rate_change


class TicketWindow(_Record):
    """How far a study's budget has issued its tickets: indices ``0..issued-1`` exist as trials; the next are
    issued as WAITING ones are claimed, so that ``max(window, RUNNING trials)`` wait (see
    shrink.search.budget): as many as the workers at hand could claim at one moment."""

    budget: int
    window: int
    issued: int

    @property
    def unissued(self) -> int:
        return max(0, self.budget - self.issued)

    def next_indices(self, waiting: int, running: int) -> range:
        """The ticket indices to issue now, with ``waiting`` WAITING and ``running`` RUNNING trials."""
        wanted = max(self.window, running) - waiting
        return range(self.issued, self.issued + max(0, min(wanted, self.unissued)))

    def after(self, n_issued: int) -> TicketWindow:
        return self.model_copy(update={"issued": self.issued + n_issued})


class HasAttrs(Protocol):
    user_attrs: Mapping[str, Any]


def epochs_value(records: list[Any]) -> list[dict[str, Any]]:
    """The stored ``epochs`` of a trainer's history."""
    return [EpochSummary.of(record).model_dump() for record in records]


def stored_rd_point(trial: HasAttrs) -> Mapping[str, Any]:
    """The raw ``rd_point`` ({} when absent), for readers that take any subset of its keys."""
    return trial.user_attrs.get(RD_POINT_ATTR) or {}


def read_rd_point(trial: HasAttrs) -> EpochSummary | None:
    raw = trial.user_attrs.get(RD_POINT_ATTR)
    return None if not raw else EpochSummary(**raw)


def read_epochs(trial: HasAttrs, partial: bool = False) -> list[EpochSummary]:
    """The trial's recorded epochs, without the partial ones (a stop mid-epoch) unless ``partial``."""
    epochs = [EpochSummary(**raw) for raw in trial.user_attrs.get(EPOCHS_ATTR) or []]
    return epochs if partial else [e for e in epochs if not e.partial]


def stored_epochs(trial: HasAttrs) -> list[Mapping[str, Any]]:
    """The raw ``epochs`` list ([] when absent)."""
    return list(trial.user_attrs.get(EPOCHS_ATTR) or [])


def read_pruned(trial: HasAttrs) -> PrunedRecord | None:
    raw = trial.user_attrs.get(PRUNED_ATTR)
    return None if raw is None else PrunedRecord(**raw)


def read_decoder_over_limit(trial: HasAttrs) -> DecoderOverLimit | None:
    raw = trial.user_attrs.get(DECODER_LIMIT_ATTR)
    return None if raw is None else DecoderOverLimit(**raw)


def read_parent_values(trial: HasAttrs) -> ParentValues | None:
    raw = trial.user_attrs.get(PARENT_VALUES_ATTR)
    return None if raw is None else ParentValues(**raw)


def read_decoder_macs(trial: HasAttrs) -> float | None:
    value = trial.user_attrs.get(DECODER_MACS_ATTR)
    return None if value is None else float(value)


def read_curve(owner: HasAttrs, name: str) -> RDCurve | None:
    """A stored RD curve (``test_curve`` of a trial, ``dev_jpeg`` of a study), or None."""
    raw = owner.user_attrs.get(name)
    return None if raw is None else RDCurve.from_dict(raw)


def read_trial_result(trial: Any) -> TrialResult | None:
    """A trial's :class:`TrialResult`, or None when it stored no ``rd_point``."""
    point = read_rd_point(trial)
    if point is None:
        return None
    macs = read_decoder_macs(trial)
    return TrialResult(
        number=trial.number, params=dict(trial.params), point=point, decoder_macs_per_pixel=macs
    )


def verdict(trial: HasAttrs) -> str:
    """Why the trial stopped: its prune reason, else its fail reason ("" when neither)."""
    return trial.user_attrs.get(PRUNE_REASON_ATTR) or trial.user_attrs.get(FAIL_REASON_ATTR) or ""
