"""Creating and attaching to studies: the spec and the dev JPEG curve live in the study's user attributes.

``create(spec, url, name)`` validates first and writes nothing for a bad spec. ``attach(url, name, spec)``
loads a study for a worker: with a spec it must equal the stored one (else :class:`SpecMismatch` with the
differing fields); a study made by ``optuna create-study`` gets the given spec stored on first attach.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from shrink.compression.names import check_name
from shrink.compression.rd import RDCurve
from shrink.compression.trainer import dev_fingerprint, dev_jpeg_curve, load_dev_images

from .budget import TICKET_WINDOW, Ticket, drop_duplicate_tickets, issue_tickets
from .records import DEV_FINGERPRINT_ATTR, DEV_JPEG_ATTR, SPEC_ATTR, TICKETS_ATTR, read_curve
from .spec import ResolvedSpec, SpecError, spec_diff
from .storage import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S, StorageError, open_storage, redact


class SpecMismatch(SpecError):
    """A worker's spec differs from the one stored with the study."""


class DevSetMismatch(SpecError):
    """The dev images a worker reads differ from the ones the study was created with."""


@dataclass
class StudyHandle:
    study: optuna.Study
    spec: ResolvedSpec
    dev_jpeg: RDCurve
    url: str


def objectives(spec: ResolvedSpec) -> tuple[list[str], list[str]]:
    """The study's directions and metric names: ``objective.mode``'s (2 for multi, 1 for gain), then
    ``decoder_macs_per_pixel`` (minimised) when ``objective.decoder_cost = "objective"``."""
    return spec.spec.objective.directions_and_names


def directions(spec: ResolvedSpec) -> list[str]:
    return objectives(spec)[0]


def create(
    spec: ResolvedSpec,
    url: str,
    study_name: str | None = None,
    fixed_tickets: Sequence[Ticket] = (),
    user_attrs: Mapping[str, Any] | None = None,
    ticket_window: int = TICKET_WINDOW,
) -> StudyHandle:
    """A new study holding the spec and its dev JPEG curve; refuses an existing name.

    ``fixed_tickets``: the first tickets' (params, user attributes), for studies that retrain given
    configs (``shrink refine``); ``user_attrs``: more study attributes, written before any ticket;
    ``ticket_window``: how many of the budget's tickets wait at least (search/budget.py; the budget or more:
    all are issued at create)."""
    name = check_name(study_name or spec.spec.name, "study name")
    dev_jpeg = dev_jpeg_curve(load_dev_images(spec.base_config.data))  # fails before storage is touched
    storage = open_storage(url)
    directions_, metric_names = objectives(spec)
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=directions_)
    except optuna.exceptions.DuplicatedStudyError:
        raise SpecError(
            f"study {name!r} already exists in {redact(url)}; attach workers to it instead"
        ) from None
    try:
        with _terminate_raises():
            study.set_metric_names(metric_names)
            for key, value in (user_attrs or {}).items():
                study.set_user_attr(key, value)
            study.set_user_attr(SPEC_ATTR, spec.to_json())
            study.set_user_attr(DEV_JPEG_ATTR, dev_jpeg.to_dict())
            check_dev_fingerprint(study, spec)
            _ensure_tickets(study, spec, fixed_tickets, ticket_window)
    except BaseException:  # nothing half-written: a study without all its tickets would train fewer trials
        optuna.delete_study(study_name=name, storage=storage)
        raise
    return StudyHandle(study, spec, dev_jpeg, url)


@contextlib.contextmanager
def _terminate_raises() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler's timeout) raises SystemExit in here, as Ctrl-C raises
    KeyboardInterrupt, so that a half-made study is deleted on the way out (SIGKILL cannot be caught: the
    tickets' one transaction then leaves a study without tickets, which its first attach issues)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def attach(
    url: str,
    study_name: str,
    spec: ResolvedSpec | None = None,
    sampler_seed_offset: int = 0,
    heartbeat: tuple[int, int] = (HEARTBEAT_INTERVAL_S, GRACE_PERIOD_S),
) -> StudyHandle:
    """Load a study for a worker, checking (or storing) its spec and building the sampler it asks.

    ``heartbeat``: (interval, grace period) in seconds on RDB storages.
    """
    storage = open_storage(url, heartbeat_interval=heartbeat[0], grace_period=heartbeat[1])
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise StorageError(f"no study named {study_name!r} in {redact(url)}") from None
    stored = stored_spec(study)
    if stored is None:
        if spec is None:
            raise SpecError(f"study {study_name!r} has no stored spec; pass --spec SPEC to attach one")
        _adopt(study, spec)
        stored = spec
    elif spec is not None:
        diff = spec_diff(stored, spec)
        if diff:
            raise SpecMismatch(
                f"spec differs from the one stored with study {study_name!r}: "
                + "; ".join(diff[:8])
                + (f" (and {len(diff) - 8} more)" if len(diff) > 8 else "")
            )
    check_dev_fingerprint(study, stored)
    dev_jpeg = _cached_dev_jpeg(study, stored)
    _ensure_tickets(study, stored)
    # A worker that attaches to a study with trials must not replay the random stream of the first one
    # (same seed -> the same startup params again): offset the seed by the trials already started.
    already = len([t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING])
    study.sampler = build_sampler(stored, sampler_seed_offset + 7919 * already)
    study.pruner = build_optuna_pruner(stored)
    return StudyHandle(study, stored, dev_jpeg, url)


def load_study(url: str, study_name: str) -> optuna.Study:
    """The study, read by a tool that runs no trials (export, report, refine): no heartbeat."""
    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(url, heartbeat_interval=None))
    except KeyError:
        raise StorageError(f"no study named {study_name!r} in {redact(url)}") from None


def stored_spec(study: optuna.Study) -> ResolvedSpec | None:
    raw = study.user_attrs.get(SPEC_ATTR)
    if raw is None:
        return None
    return ResolvedSpec.from_json(raw if isinstance(raw, str) else json.dumps(raw))


def _adopt(study: optuna.Study, spec: ResolvedSpec) -> None:
    """A study created by ``optuna create-study``: check its directions, then store the spec."""
    wanted = [optuna.study.StudyDirection[d.upper()] for d in directions(spec)]
    if list(study.directions) != wanted:
        have = [d.name.lower() for d in study.directions]
        raise SpecMismatch(
            f"study directions {have} do not match objective.mode = {spec.spec.objective.mode!r}, "
            f"decoder_cost = {spec.spec.objective.decoder_cost!r} ({directions(spec)})"
        )
    study.set_user_attr(SPEC_ATTR, spec.to_json())


def _ensure_tickets(
    study: optuna.Study, spec: ResolvedSpec, fixed: Sequence[Ticket] = (), window: int = TICKET_WINDOW
) -> None:
    """The budget's claim tickets (search/budget.py), issued once per study: at create, or at the first
    attach of a study made by ``optuna create-study`` or before tickets existed."""
    if study.user_attrs.get(TICKETS_ATTR) is None:
        issue_tickets(study, spec.spec.budget.n_trials, fixed, window)
        study.set_user_attr(TICKETS_ATTR, spec.spec.budget.n_trials)
        drop_duplicate_tickets(study)


def check_dev_fingerprint(study: optuna.Study, spec: ResolvedSpec) -> None:
    """Refuse (:class:`DevSetMismatch`) dev images that differ from the study's: their fingerprint is stored
    at create, or at the first attach of a study stored without one, and compared at every attach."""
    data = spec.base_config.data
    here = dev_fingerprint(data)
    stored = study.user_attrs.get(DEV_FINGERPRINT_ATTR)
    if stored is None:
        study.set_user_attr(DEV_FINGERPRINT_ATTR, here)
    elif stored != here:
        raise DevSetMismatch(
            f"dev set differs from the one the study was created with: {data.dev} "
            f"(fingerprint {str(stored)[:12]} != {here[:12]})"
        )


def _cached_dev_jpeg(study: optuna.Study, spec: ResolvedSpec) -> RDCurve:
    stored = read_curve(study, DEV_JPEG_ATTR)
    if stored is not None:
        return stored
    curve = dev_jpeg_curve(load_dev_images(spec.base_config.data))
    study.set_user_attr(DEV_JPEG_ATTR, curve.to_dict())
    return curve


def build_sampler(spec: ResolvedSpec, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """Samplers are not stored by Optuna: every worker builds its own from the spec (seed + worker index)."""
    sampler = spec.spec.sampler
    seed = spec.spec.seed + seed_offset
    if sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if sampler.name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if sampler.name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=sampler.n_startup_trials)
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=sampler.n_startup_trials, multivariate=True, constant_liar=True
    )


def build_optuna_pruner(spec: ResolvedSpec) -> optuna.pruners.BasePruner:
    """Optuna's own pruners (single-objective ``gain`` studies); the others are ours (see pruning.py)."""
    pruner = spec.spec.pruner
    if pruner.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=pruner.min_peers, n_warmup_steps=pruner.min_epochs - 1
        )
    if pruner.name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=pruner.min_epochs, reduction_factor=pruner.reduction_factor
        )
    if pruner.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=pruner.min_epochs,
            max_resource=spec.base_config.training.epochs,
            reduction_factor=pruner.reduction_factor,
        )
    return optuna.pruners.NopPruner()
