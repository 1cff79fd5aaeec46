"""One Optuna trial = one full alternating training run, reporting per epoch and pruned when losing.

Read top to bottom: sample the config, record the decoder's cost (MACs per output pixel and parameters:
``shrink.compression.cost``) and prune the trial untrained if it is over the spec's limit, pick the run folder
(keyed by the *original* trial, so a retried trial resumes its predecessor's checkpoint) and lock it, train
with a per-epoch callback that records the epoch in the trial's user attributes and asks the pruner, then
return the objective values of the best epoch (the one ``best.ckpt`` holds), and the decoder's MACs/px when
the spec makes it an objective.

One process trains in a run folder at a time: a retry whose original still runs (its heartbeat went falsely
stale) waits for the folder's lock, and the original, finding at its next epoch that its trial was failed,
stops there and leaves the run to the retry, which resumes from its checkpoint.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import torch
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

from shrink.compression.cost import ModelCost, config_cost
from shrink.compression.trainer import EpochRecord, Trainer, TrainingInterrupted, best_record

from .pruning import EpochPoint, MultiObjectivePruner, build_mo_pruner
from .records import (
    CHECKPOINT_ATTR,
    DECODER_LIMIT_ATTR,
    DECODER_MACS_ATTR,
    DECODER_PARAMS_ATTR,
    DEV_POINTS_ATTR,
    DEVICE_ATTR,
    EPOCHS_ATTR,
    FAIL_REASON_ATTR,
    INTERRUPTED_PREFIX,
    ORIGINAL_TRIAL_ATTR,
    PARENT_TRIAL_ATTR,
    PRUNE_REASON_ATTR,
    PRUNED_ATTR,
    RD_POINT_ATTR,
    RUN_DIR_ATTR,
    TEST_CURVE_ATTR,
    WALL_S_ATTR,
    WORKER_WALL_S_ATTR,
    DecoderOverLimit,
    EpochSummary,
    PrunedRecord,
    epochs_value,
    stored_epochs,
)
from .refine import measure_test_curve
from .space import config_for, suggest
from .spec import OBJECTIVE_MODES, OPTUNA_PRUNERS
from .storage import journal_path, read_trial, storage_of, trial_id_of
from .study import StudyHandle

OnComplete = Callable[[optuna.Trial, Trainer, EpochRecord], None]


def original_number(trial: FrozenTrial) -> int:
    retried = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    return trial.number if retried is None else int(retried)


def default_run_root(url: str) -> Path:
    """Trial folders beside a file storage (``study.db`` -> ``study.runs/``), else ``./shrink-runs``."""
    journal = journal_path(url)
    if journal is not None:
        return journal.with_suffix(".runs")
    match = re.match(r"sqlite:///(.+)$", url)
    if match and match.group(1) != ":memory:":
        return Path(match.group(1)).with_suffix(".runs")
    return Path("shrink-runs")


def study_curves(
    study: optuna.Study, finished: dict[int, tuple[int, list[EpochPoint] | None]] | None = None
) -> dict[int, list[EpochPoint]]:
    """Every trial's recorded epochs, keyed by original trial number (a retry replaces its predecessor).

    ``finished``: (original number, curve or None for no epoch recorded) of each finished trial by trial id,
    kept by the caller between calls: a finished trial's epochs no longer change, and parsing them all at
    every rung grows with the study."""
    curves: dict[int, list[EpochPoint]] = {}
    for trial in study.get_trials(deepcopy=False):
        known = None if finished is None else finished.get(trial_id_of(trial))
        if known is None:
            known = original_number(trial), _curve(trial)
            if finished is not None and trial.state.is_finished():
                finished[trial_id_of(trial)] = known
        original, curve = known
        if curve is not None:
            curves[original] = curve
    return curves


def _curve(trial: FrozenTrial) -> list[EpochPoint] | None:
    epochs = stored_epochs(trial)
    if not epochs:
        return None
    return [EpochPoint.from_record(record) for record in epochs if not record.get("partial")]


class TrialTakenOver(RuntimeError):
    """This process's trial was failed as stale while it ran; its retry resumes the run."""


class RunFolderLock:
    """An exclusive ``flock`` on ``folder/.lock`` while a trial trains there (released if the process dies).

    Entering waits while another process holds it, unless ``stopping()`` turns true.
    """

    def __init__(self, folder: Path, log: Callable[[str], None], stopping: Callable[[], bool], poll_s=0.5):
        self.folder, self.log, self.stopping, self.poll_s = folder, log, stopping, poll_s
        self.handle = None

    def __enter__(self) -> RunFolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.folder / ".lock", "a+")
        waiting = False
        while True:
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if self.stopping():
                    self.handle.close()
                    raise TrainingInterrupted(f"stopped while waiting for {self.folder}") from None
                if not waiting:
                    self.handle.seek(0)
                    holder = self.handle.read().strip() or "another process"
                    self.log(f"waiting for {self.folder}: {holder} still trains there")
                    waiting = True
                time.sleep(self.poll_s)
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()}")
        self.handle.flush()
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


class TrialRunner:
    """The objective function workers hand to Optuna: ``runner(trial) -> values``."""

    def __init__(
        self,
        handle: StudyHandle,
        run_root: str | Path,
        log: Callable[[str], None] = print,
        on_complete: OnComplete | None = None,
    ):
        """``on_complete(trial, trainer, best_record)`` runs while the trial is still RUNNING (it may attach
        notes and artifacts, which Optuna refuses on finished trials)."""
        self.handle, self.run_root, self.log, self.on_complete = handle, Path(run_root), log, on_complete
        self.spec = handle.spec
        self.trainer: Trainer | None = None
        self.stop_requested = False
        self.last_trial_number: int | None = None
        self._finished_curves: dict[int, tuple[int, list[EpochPoint] | None]] = {}  # study_curves' cache
        pruner = self.spec.spec.pruner
        self.mo_pruner: MultiObjectivePruner | None = None
        if pruner.name not in OPTUNA_PRUNERS:
            self.mo_pruner = build_mo_pruner(
                pruner.name,
                min_epochs=pruner.min_epochs,
                reduction_factor=pruner.reduction_factor,
                min_peers=pruner.min_peers,
                max_epochs=self.spec.base_config.training.epochs,
                rate_tolerance=pruner.rate_tolerance,
            )

    def request_stop(self) -> None:
        """From a signal handler: the running trial checkpoints after its current step and stops."""
        self.stop_requested = True
        if self.trainer is not None:
            self.trainer.request_stop()

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        self.last_trial_number = trial.number
        try:
            return self._run(trial)
        except (optuna.TrialPruned, TrialTakenOver):
            raise
        except KeyboardInterrupt as interrupt:  # a signal: the worker re-queues the trial to resume
            trial.set_user_attr(FAIL_REASON_ATTR, f"{INTERRUPTED_PREFIX}: {interrupt}; re-queued to resume")
            raise
        except Exception as error:
            trial.set_user_attr(FAIL_REASON_ATTR, f"{type(error).__name__}: {error}")
            raise
        finally:
            self.trainer = None

    def _run(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        started = time.monotonic()
        config = config_for(self.spec, suggest(trial, self.spec))
        cost = self._record_cost(trial, config)
        original = original_number(_frozen(trial))
        run_dir = self.run_root / self.handle.study.study_name / f"trial-{original:05d}"
        prefix = f"[trial {trial.number}] "
        with RunFolderLock(run_dir, lambda text: self.log(prefix + text), lambda: self.stop_requested):
            return self._train(trial, config, cost, original, run_dir, prefix, started)

    def _record_cost(self, trial: optuna.Trial, config) -> ModelCost:
        """The decoder's MACs per output pixel and parameters, stored once per trial before training; a
        trial over ``objective.max_decoder_macs_per_pixel`` is pruned here, before any folder or step."""
        cost = config_cost(config.model)
        trial.set_user_attr(DECODER_MACS_ATTR, cost.decoder_macs_per_pixel)
        trial.set_user_attr(DECODER_PARAMS_ATTR, cost.decoder_params)
        limit = self.spec.spec.objective.max_decoder_macs_per_pixel
        if limit is None:
            return cost
        # Optuna 5's constraint (system attribute ``constraints:decoder_macs_per_pixel``, feasible <= 0): TPE,
        # NSGA-II and GP rank infeasible trials below feasible ones and ``best_trials`` leaves them out; the
        # random sampler ignores it. A retry may carry its predecessor's (the same value).
        if DECODER_MACS_ATTR not in trial.constraints:
            trial.set_constraint(DECODER_MACS_ATTR, cost.decoder_macs_per_pixel - limit)
        if cost.decoder_macs_per_pixel > limit:
            reason = (
                f"decoder cost {cost.decoder_macs_per_pixel:,.0f} MACs/px > "
                f"objective.max_decoder_macs_per_pixel = {limit:,.0f}: not trained"
            )
            over = DecoderOverLimit(decoder_macs_per_pixel=cost.decoder_macs_per_pixel, max=limit)
            trial.set_user_attr(DECODER_LIMIT_ATTR, over.model_dump())
            trial.set_user_attr(PRUNE_REASON_ATTR, reason)
            raise optuna.TrialPruned(reason)
        return cost

    def _train(
        self, trial, config, cost: ModelCost, original: int, run_dir: Path, prefix: str, started: float
    ):
        dev_jpeg = self.handle.dev_jpeg if config.data == _with_qualities(self.spec, config) else None
        self.trainer = trainer = Trainer(
            config,
            run_dir,
            callback=self._on_epoch(trial, original),
            log=lambda text: self.log(prefix + text),
            dev_jpeg=dev_jpeg,
        )
        if self.stop_requested:
            trainer.request_stop()
        trial.set_user_attr(ORIGINAL_TRIAL_ATTR, original)
        trial.set_user_attr(RUN_DIR_ATTR, str(run_dir))
        trial.set_user_attr(DEVICE_ATTR, _device_name(trainer.device))
        if (run_dir / "last.ckpt").is_file():
            trainer.resume(run_dir / "last.ckpt")
            trial.set_user_attr(EPOCHS_ATTR, epochs_value(trainer.history))
        if trainer.step < trainer.total_steps:
            trainer.run()
        best = best_record(trainer.history, trainer.config.training.judge)  # the epoch best.ckpt holds
        trial.set_user_attr(CHECKPOINT_ATTR, str(run_dir / "best.ckpt"))
        trial.set_user_attr(WALL_S_ATTR, round(trainer.elapsed_before, 1))
        trial.set_user_attr(WORKER_WALL_S_ATTR, round(time.monotonic() - started, 1))
        trial.set_user_attr(RD_POINT_ATTR, EpochSummary.of(best).model_dump())
        trial.set_user_attr(DEV_POINTS_ATTR, best.dev_points)
        if PARENT_TRIAL_ATTR in trial.user_attrs and TEST_CURVE_ATTR not in trial.user_attrs:
            self._test(trial, run_dir / "best.ckpt", prefix)
        if self.on_complete is not None:
            try:
                self.on_complete(trial, trainer, best)
            except Exception as error:  # dashboard notes and artifacts are extras: the trial stands
                self.log(f"{prefix}trial artifacts not stored ({type(error).__name__}: {error})")
        objective = self.spec.spec.objective
        values = tuple(getattr(best, name) for name in OBJECTIVE_MODES[objective.mode][1])
        if objective.decoder_cost == "objective":
            values += (cost.decoder_macs_per_pixel,)  # fixed per trial: the pruners ignore it (pruning.py)
        return values[0] if len(values) == 1 else values

    def _test(self, trial: optuna.Trial, checkpoint: Path, prefix: str) -> None:
        """A refined trial's one evaluation on the held-out test set ([test]), stored with the trial. A
        failure is logged, not fatal: the trained trial stands, and ``shrink export --family --test`` can
        measure the curve later."""
        try:
            curve = measure_test_curve(self.spec, str(checkpoint), f"trial-{trial.number:05d}")
        except Exception as error:
            self.log(f"{prefix}test curve not measured ({type(error).__name__}: {error})")
            return
        if curve is not None:
            trial.set_user_attr(TEST_CURVE_ATTR, curve.to_dict())
            self.log(f"{prefix}test curve on {self.spec.spec.test.data}: {len(curve.points)} qualities")

    def _on_epoch(self, trial: optuna.Trial, original: int) -> Callable[[EpochRecord, Trainer], None]:
        def on_epoch(record: EpochRecord, trainer: Trainer) -> None:
            state = read_trial(storage_of(trial.study), trial_id_of(trial)).state
            if state != optuna.trial.TrialState.RUNNING:
                raise TrialTakenOver(
                    f"trial {trial.number} is {state.name}: failed as stale while it ran; "
                    f"its retry resumes from {trainer.out_dir} (epoch {record.epoch})"
                )
            epochs = epochs_value(trainer.history)
            trial.set_user_attr(EPOCHS_ATTR, epochs)
            if record.partial:
                return
            if self.mo_pruner is None:
                rate_judged = self.spec.spec.objective.mode == "rate"
                trial.report(record.dev_rate_change if rate_judged else record.dev_gain_db, record.epoch)
                if trial.should_prune():
                    value = (
                        f"rate {100 * record.dev_rate_change:+.2f}% vs JPEG"
                        if rate_judged
                        else f"gain {record.dev_gain_db:+.3f} dB"
                    )
                    reason = f"Optuna {self.spec.spec.pruner.name} pruner at epoch {record.epoch}: {value}"
                    trial.set_user_attr(PRUNE_REASON_ATTR, reason)
                    raise optuna.TrialPruned(reason)
                return
            if not self.mo_pruner.judges_at(record.epoch):
                return
            curves = study_curves(self.handle.study, self._finished_curves)
            curves[original] = [EpochPoint.from_record(r) for r in epochs if not r["partial"]]
            decision = self.mo_pruner.decide(original, curves)
            if decision is not None:
                trial.set_user_attr(PRUNED_ATTR, PrunedRecord(**decision.to_dict()).model_dump())
                trial.set_user_attr(PRUNE_REASON_ATTR, decision.reason())
                raise optuna.TrialPruned(decision.reason())

        return on_epoch


def _frozen(trial: optuna.Trial) -> FrozenTrial:
    """The stored trial (its system attributes say whether it retries an earlier one)."""
    return storage_of(trial.study).get_trial(trial_id_of(trial))


def _with_qualities(spec, config):
    """The base config's data section with this trial's dev qualities: equal means the cached curve fits."""
    return spec.base_config.data.model_copy(update={"dev_qualities": config.data.dev_qualities})


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu ({torch.get_num_threads()} threads)"
