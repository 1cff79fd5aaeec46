"""The alternating trainer: RecCNN and ComCNN take turns, each with its own optimiser.

Read top to bottom: set-up, the two steps, the turn schedule, the epoch end (dev metrics, guard, checkpoint,
callback), then checkpoint state. JPEG is not differentiable, so the nets alternate:
- RecCNN turn: the real decoded file (no gradient to the ComCNN) -> bicubic up -> RecCNN; loss on x_hat.
- ComCNN turn: x -> ComCNN -> codec in one of three gradient modes -> frozen RecCNN; loss on x_hat and
  the rate proxy (``loss.com_loss``: a weighted mixture, or the dev gain's own units, dB against ln-rate),
  plus fidelity to the bicubic downscale and a penalty on compact values outside [0, 1]. With
  ``codec.learn_tables`` the codec's base quantisation tables learn in the same turn, through the proxy's
  quantiser and rate, and the real codec writes with them (rounded) from then on.
The guard judges each ComCNN turn once the RecCNN has had its next turn to adapt to it (``guard.when``):
the dev score (``training.judge``: the gain over JPEG in dB at matched bpp, or the rate against JPEG at
matched MS-SSIM) is measured with the new ComCNN and again with the ComCNN from before the turn, both behind
the same RecCNN; when the old one does better, the ComCNN is rolled back to it and its learning rate is cut
(``training.guard``). ``when = "immediate"`` judges at the turn's end instead. The same score picks
``best.ckpt``.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .baselines import codec_curve
from .channel import CodecChannel
from .checkpoint import LEARNED_TABLES_KEY, CheckpointError, load_checkpoint, save_checkpoint
from .codecs import JpegCodec, RoundTripJob, build_codec
from .config import ConfigError, DataConfig, OptimizerConfig, TrainConfig
from .cost import config_cost, format_cost
from .data import CropSampler, NamedImage, center_crop, fingerprint_images, load_images
from .evaluate import evaluate
from .jpeg_proxy import LearnedTables
from .metrics import bpp, gain_units_loss, ms_ssim_levels, reconstruction_loss
from .models import build_model, frozen
from .pipeline import Batch, BatchStream
from .rd import RDCurve, RDPoint, operating_gain, operating_point, operating_rate_change

DEV_JPEG_QUALITIES = (1, 2, 3, 5, 8, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run cannot continue."""


class TrainingInterrupted(KeyboardInterrupt):
    """:meth:`Trainer.request_stop` was honoured: ``last.ckpt`` holds the step reached; resume from it."""


@dataclass
class EpochRecord:
    epoch: int
    step: int
    turns: list[str]
    seconds: float
    lr_com: float
    lr_rec: float
    loss_rec: float | None
    loss_com: float | None
    train_bpp: float | None
    dev_bpp: float
    dev_msssim: float
    dev_msssim_db: float
    dev_psnr: float
    dev_gain_db: float
    rolled_back: bool = False
    com_baseline_gain_db: float | None = None  # judged epochs: the gain with the ComCNN from before its turn
    partial: bool = False
    dev_points: list[dict] = field(default_factory=list)
    dev_rate_change: float | None = None  # rd.operating_rate_change vs JPEG; None in earlier checkpoints

    def score(self, judge: str) -> float:
        """What ``training.judge`` picks the best epoch by (:func:`judged_score`)."""
        if judge == "rate" and self.dev_rate_change is None:
            raise ValueError(f"epoch {self.epoch} has no dev rate (recorded by an earlier version)")
        return judged_score(judge, self.dev_gain_db, self.dev_rate_change)


def judged_score(judge: str, gain_db: float, rate_change: float | None) -> float:
    """Higher is better: the dev gain in dB (``judge = "gain"``) or the % of JPEG's bytes saved at equal
    MS-SSIM (``"rate"``)."""
    return gain_db if judge == "gain" else -100.0 * rate_change


def best_record(history: list[EpochRecord], judge: str) -> EpochRecord:
    """The epoch ``best.ckpt`` holds: the highest :meth:`EpochRecord.score` (the first of equals)."""
    return max(history, key=lambda record: record.score(judge))


@dataclass
class TrainResult:
    history: list[EpochRecord]
    dev_curve: RDCurve
    dev_jpeg: RDCurve
    checkpoint: Path
    stopped_by_budget: bool


def select_device(config: TrainConfig) -> torch.device:
    wanted = config.device.device
    if wanted == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device.device = 'cuda' but CUDA is not available")
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(wanted)


def require_device(config: TrainConfig) -> None:
    """Refuse, before anything is written, a config asking for CUDA on a machine without it (bad input)."""
    if config.device.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device.device = 'cuda' but CUDA is not available on this machine")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_factor(
    config: OptimizerConfig, step: int, total_steps: int, own_steps: int = 0, time_share: float = 0.0
) -> float:
    """The schedule's factor at global ``step``, times a linear warm-up over the net's ``own_steps``
    (a net trains only in its turns: the ComCNN's first step may come epochs into the run).

    The cosine runs over whichever share is larger, of the steps or of the time budget (``time_share``,
    0 when the schedule runs over steps only)."""
    warmup = min(1.0, (own_steps + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    if config.schedule == "constant":
        return warmup
    if config.schedule == "step":
        return warmup * config.step_gamma ** (step // config.step_every)
    progress = min(max(step / max(total_steps, 1), time_share), 1.0)
    cosine = config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return warmup * cosine


def optimizer_steps(optimizer: torch.optim.Optimizer) -> int:
    """Steps this optimizer has taken (Adam keeps a count per parameter: saved, restored, rolled back)."""
    for state in optimizer.state.values():
        return int(state["step"])
    return 0


def make_optimizer(params, config: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, betas=config.betas)


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        out_dir: str | Path,
        callback: Callable[[EpochRecord, Trainer], None] | None = None,
        log: Callable[[str], None] = print,
        dev_jpeg: RDCurve | None = None,
    ):
        """``dev_jpeg``: the JPEG curve of this config's dev images, when the caller has it cached."""
        self.config, self.out_dir, self.callback, self.log = config, Path(out_dir), callback, log
        self.stop_requested = False
        seed_everything(config.seed)
        if config.device.threads:
            torch.set_num_threads(config.device.threads)
        self.device = select_device(config)
        self.use_amp = self.device.type == "cuda" and config.device.amp
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = config.device.cudnn_benchmark
        self.memory_format = (
            torch.channels_last
            if config.device.channels_last and self.device.type == "cuda"
            else torch.contiguous_format
        )
        self.model = build_model(config.model).to(self.device, memory_format=self.memory_format)
        groups = self.model.parameter_groups()  # asserts the two groups are disjoint
        self.opt_com = make_optimizer(groups["comcnn"], config.optim_com)
        self.opt_rec = make_optimizer(groups["reccnn"], config.optim_rec)
        self.com_lr_scale = 1.0
        self.com_pending: dict | None = None  # the ComCNN (and its optimiser) before the turn being judged
        self.rec_after_com = False  # a RecCNN step has run since the last ComCNN step

        training = config.training
        self.total_steps = training.epochs * training.steps_per_epoch
        self.period = training.alternation_period or training.steps_per_epoch
        self.warmup_steps = training.rec_warmup_epochs * training.steps_per_epoch
        self.loss_levels = ms_ssim_levels(training.crop, training.crop)

        self.sampler = CropSampler(load_images(config.data.train), training.crop, seed=config.seed)
        self.quality_generator = torch.Generator().manual_seed(config.seed + 1)
        self.input_rng = self._input_rng_state()  # after the last batch trained on: what checkpoints hold
        on_gpu = self.device.type == "cuda"
        prefetch, overlap = config.device.prefetch_batches, config.device.overlap_codec
        self.prefetch_batches = (2 if on_gpu else 0) if prefetch is None else prefetch
        self.overlap_codec = on_gpu if overlap is None else overlap
        self.batches: BatchStream | None = None  # started by the first step, closed when run() returns
        self.ahead: tuple[Batch, torch.Tensor, RoundTripJob] | None = None  # next batch, codec under way
        self.buffers_before_ahead: dict[str, torch.Tensor] = {}  # the ComCNN's norm statistics before it
        self.input_wait_s = 0.0  # how long steps waited for batches and for the codec (benchmarks/)
        self.dev_images = load_dev_images(config.data)
        self.codec = build_codec(config.codec)
        self.tables: LearnedTables | None = None  # codec.learn_tables: encoder-side, like the ComCNN
        self.opt_tables: torch.optim.Optimizer | None = None
        if config.codec.learn_tables:
            self.tables = LearnedTables(self.codec.tables).to(self.device)
            self.opt_tables = make_optimizer(self.tables.parameters(), config.optim_tables)
            self._sync_codec_tables()
        self.channel = CodecChannel(
            self.codec, training.gradient_mode, config.codec.subsampling, config.codec.threads
        )
        self.dev_jpeg = dev_jpeg if dev_jpeg is not None else dev_jpeg_curve(self.dev_images)

        self.step = 0
        self.history: list[EpochRecord] = []
        self.best_score = -math.inf
        self.elapsed_before = 0.0
        self.clock_start: float | None = None  # when run() last started its clock
        self._reset_epoch_stats()

    # ---- set-up helpers -------------------------------------------------------------------------------
    def _reset_epoch_stats(self) -> None:
        self.epoch_losses: dict[str, list[float]] = {"rec": [], "com": []}
        self.epoch_bpp: list[float] = []
        self.epoch_turns: list[str] = []

    def _comcnn_state(self) -> dict:
        """The encoder side a ComCNN turn trains (the ComCNN, learned tables) and its optimisers."""
        state = {**self._encoder_weights(), "optim": self.opt_com.state_dict()}
        if self.opt_tables is not None:
            state["optim_tables"] = self.opt_tables.state_dict()
        return copy.deepcopy(state)

    def _encoder_weights(self) -> dict:
        weights = {"model": self.model.comcnn.state_dict()}
        if self.tables is not None:
            weights["tables"] = self.tables.state_dict()
        return copy.deepcopy(weights)

    def _load_encoder_weights(self, weights: dict) -> None:
        self.model.comcnn.load_state_dict(weights["model"])
        if self.tables is not None:
            self.tables.load_state_dict(weights["tables"])
            self._sync_codec_tables()

    def _sync_codec_tables(self) -> None:
        """The real codec writes with the learned tables as rounded now (no round trip is under way: the
        tables change only in ComCNN turns, and no batch is looked ahead at across one)."""
        self.codec.tables = self.tables.integer_base()

    def _autocast(self):
        """bf16 autocast around the nets' forward passes; losses and metrics run in float32 outside it."""
        if self.use_amp:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _sample_qualities(self, batch_size: int) -> list[int]:
        codec = self.config.codec
        if codec.quality is not None:
            return [codec.quality] * batch_size
        low, high = codec.quality_range
        return torch.randint(low, high + 1, (batch_size,), generator=self.quality_generator).tolist()

    def elapsed_s(self) -> float:
        """Training time so far, across resumes (the clock of ``time_budget_s``)."""
        running = time.monotonic() - self.clock_start if self.clock_start is not None else 0.0
        return self.elapsed_before + running

    def _time_share(self) -> float:
        training = self.config.training
        if training.schedule_clock == "steps":
            return 0.0
        return self.elapsed_s() / training.time_budget_s

    def _set_learning_rates(self) -> None:
        share = self._time_share()
        com_steps, rec_steps = optimizer_steps(self.opt_com), optimizer_steps(self.opt_rec)
        com = lr_factor(self.config.optim_com, self.step, self.total_steps, com_steps, share)
        com *= self.com_lr_scale
        rec = lr_factor(self.config.optim_rec, self.step, self.total_steps, rec_steps, share)
        for group in self.opt_com.param_groups:
            group["lr"] = self.config.optim_com.lr * com
        for group in self.opt_rec.param_groups:
            group["lr"] = self.config.optim_rec.lr * rec
        if self.opt_tables is not None:
            optim = self.config.optim_tables
            factor = lr_factor(optim, self.step, self.total_steps, optimizer_steps(self.opt_tables), share)
            for group in self.opt_tables.param_groups:
                group["lr"] = optim.lr * factor * self.com_lr_scale

    def _check_finite(self, loss: torch.Tensor, turn: str) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite {turn} loss ({loss.item()}) at step {self.step}, epoch {self.epoch}"
            )

    def _optimizer_step(self, optimizer, loss: torch.Tensor, params_of: torch.nn.Module, clip: float) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params_of.parameters(), clip)
        optimizer.step()

    @property
    def epoch(self) -> int:
        return self.step // self.config.training.steps_per_epoch

    # ---- the two steps --------------------------------------------------------------------------------
    def rec_step(self, x: torch.Tensor, qualities: list[int], job: RoundTripJob | None = None) -> float:
        """RecCNN learns the residual on what the decoder really gets: the decoded file, upscaled.

        ``job``: this batch's codec round trip when it was started ahead (:meth:`_look_ahead`)."""
        decoded, sizes = self._receive(job or self._start_round_trip(x, qualities))
        decoded = decoded.contiguous(memory_format=self.memory_format)
        self.epoch_bpp.extend(bpp(size, *x.shape[-2:]) for size in sizes)
        with self._autocast():
            x_hat = self.model.reconstruct(decoded, tuple(x.shape[-2:]), qualities)["x_hat"]
        loss = reconstruction_loss(x_hat.float(), x, self.config.loss.alpha_rec, self.config.loss.mse_scale)
        self._check_finite(loss, "RecCNN")
        self._optimizer_step(self.opt_rec, loss, self.model.reccnn, self.config.optim_rec.grad_clip)
        return loss.item()

    def com_step(self, x: torch.Tensor, qualities: list[int]) -> float:
        """ComCNN learns end to end through the codec (gradient mode) and a frozen RecCNN."""
        cfg = self.config.loss
        base_tables = None
        if self.tables is not None:
            self.opt_tables.zero_grad(set_to_none=True)
            base_tables = self.tables.base()
        with frozen(self.model.reccnn):
            with self._autocast():
                compressed = self.model.compress(x)
            compact, base = compressed["compact"].float(), compressed["base"].float()
            real = None
            if self.channel.needs_real_decode():
                real, sizes = self._receive(self.channel.submit(compact.detach(), qualities))
                self.epoch_bpp.extend(bpp(size, *x.shape[-2:]) for size in sizes)
            gain_loss = cfg.com_loss == "gain"
            decoded, rate_proxy = self.channel.differentiable(
                compact, qualities, real, with_rate=gain_loss or cfg.rate_weight > 0, base_tables=base_tables
            )
            with self._autocast():
                x_hat = self.model.reconstruct(
                    decoded.contiguous(memory_format=self.memory_format), tuple(x.shape[-2:]), qualities
                )["x_hat"].float()
        if gain_loss:  # headers excluded: on small crops they would hide how the scan's size moves
            loss = gain_units_loss(x_hat, x, rate_proxy["scan_bits"], cfg.gain_slope_db)
        else:
            loss = reconstruction_loss(x_hat, x, cfg.alpha_com, cfg.mse_scale)
            if rate_proxy is not None:
                loss = loss + cfg.rate_weight * rate_proxy["bpp"].mean() / self.model.ratio**2
        if cfg.fidelity_weight > 0:
            loss = loss + cfg.fidelity_weight * F.mse_loss(compact, base)
        if cfg.range_weight > 0:
            excess = F.relu(compact - 1.0) + F.relu(-compact)
            loss = loss + cfg.range_weight * excess.pow(2).mean()
        self._check_finite(loss, "ComCNN")
        self._optimizer_step(self.opt_com, loss, self.model.comcnn, self.config.optim_com.grad_clip)
        if self.tables is not None:
            if self.config.optim_tables.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.tables.parameters(), self.config.optim_tables.grad_clip)
            self.opt_tables.step()
            self._sync_codec_tables()
        return loss.item()

    # ---- the turn schedule ----------------------------------------------------------------------------
    def turn_at(self, step: int) -> str:
        if step < self.warmup_steps:
            return "rec"
        first = self.config.training.first_turn
        other = "com" if first == "rec" else "rec"
        return first if ((step - self.warmup_steps) // self.period) % 2 == 0 else other

    def train_step(self) -> None:
        batch, x, job = self._take_batch()
        turn = self.turn_at(self.step)
        self._set_learning_rates()
        self.model.train()
        if turn == "com" and self.com_pending is None and self.config.training.guard.enabled:
            self.com_pending = self._comcnn_state()
        self.rec_after_com = turn == "rec" and self.com_pending is not None
        if turn == "rec":
            job = job or self._start_round_trip(x, batch.qualities)
            self._look_ahead()
            loss = self.rec_step(x, batch.qualities, job)
        else:
            loss = self.com_step(x, batch.qualities)
        self.epoch_losses[turn].append(loss)
        if not self.epoch_turns or self.epoch_turns[-1] != turn:
            self.epoch_turns.append(turn)
        self.step += 1

    # ---- the input pipeline: batches drawn ahead, the codec round trip of the next batch started early --
    def _draw_batch(self) -> Batch:
        """The next batch's crops and qualities (called by the :class:`BatchStream` thread)."""
        size = self.config.training.batch_size
        pixels, qualities = self.sampler.sample_uint8(size), self._sample_qualities(size)
        if self.device.type == "cuda":
            pixels = pixels.pin_memory()
        return Batch(pixels, qualities, self._input_rng_state())

    def _input_rng_state(self) -> dict[str, torch.Tensor]:
        return {"sampler": self.sampler.generator.get_state(), "quality": self.quality_generator.get_state()}

    def _next_batch(self) -> tuple[Batch, torch.Tensor]:
        """The next batch from the stream (started here, from the last trained batch's generator states),
        and its crops as float on the device."""
        if self.batches is None:
            self.sampler.generator.set_state(self.input_rng["sampler"])
            self.quality_generator.set_state(self.input_rng["quality"])
            self.batches = BatchStream(self._draw_batch, self.prefetch_batches)
        with self._waiting():
            batch = self.batches.next()
        x = batch.pixels.to(self.device, non_blocking=True).float() / 255.0
        return batch, x.contiguous(memory_format=self.memory_format)

    def _take_batch(self) -> tuple[Batch, torch.Tensor, RoundTripJob | None]:
        """The batch to train on now, and its round trip when :meth:`_look_ahead` started it."""
        ahead, self.ahead = self.ahead, None
        batch, x, job = ahead if ahead is not None else (*self._next_batch(), None)
        self.input_rng = batch.rng_after
        return batch, x, job

    def _start_round_trip(self, x: torch.Tensor, qualities: list[int]) -> RoundTripJob:
        with torch.no_grad(), self._autocast():
            compact = self.model.compress(x)["compact"]
        return self.channel.submit(compact, qualities)

    def _receive(self, job: RoundTripJob) -> tuple[torch.Tensor, list[int]]:
        with self._waiting():
            return self.channel.receive(job, self.device)

    @contextmanager
    def _waiting(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.input_wait_s += time.perf_counter() - start

    def _look_ahead(self) -> None:
        """Start the next batch's codec round trip, to run in the codec threads during this RecCNN step.

        Only where the ComCNN that makes its compact image is the one the next step will use: the next step
        is a RecCNN step of the same epoch (an epoch's end may roll the ComCNN back). The compact image is
        computed before this step's RecCNN pass; their results are the same as in order unless both nets
        draw dropout masks from torch's global generator."""
        following = self.step + 1
        if (
            not self.overlap_codec
            or following >= self.total_steps
            or following % self.config.training.steps_per_epoch == 0
            or self.turn_at(following) != "rec"
        ):
            return
        batch, x = self._next_batch()
        self.buffers_before_ahead = {name: b.clone() for name, b in self.model.comcnn.named_buffers()}
        self.ahead = batch, x, self._start_round_trip(x, batch.qualities)

    def _drop_look_ahead(self) -> None:
        """Forget the batch looked ahead at (a later step draws it again), and undo what its compact image
        did to the ComCNN's batch-norm statistics: before a checkpoint or a dev evaluation mid-epoch."""
        if self.ahead is None:
            return
        self.ahead = None
        with torch.no_grad():
            for name, buffer in self.model.comcnn.named_buffers():
                buffer.copy_(self.buffers_before_ahead[name])

    def _close_batches(self) -> None:
        """Stop the stream and drop the batch looked ahead at: a later step draws both again."""
        self._drop_look_ahead()
        if self.batches is not None:
            self.batches.close()
            self.batches = None

    # ---- epoch end: dev metrics, guard, checkpoint, callback --------------------------------------------
    def evaluate_dev(self) -> RDCurve:
        return evaluate(self.model, self.dev_images, self.config.data.dev_qualities, self.codec)

    def score(self, curve: RDCurve) -> float:
        """The dev score ``training.judge`` names (:func:`judged_score`) of a dev curve."""
        gain, rate_change = operating_gain(curve, self.dev_jpeg), operating_rate_change(curve, self.dev_jpeg)
        return judged_score(self.config.training.judge, gain, rate_change)

    def _guard_due(self) -> bool:
        if self.com_pending is None:
            return False
        return self.rec_after_com or self.config.training.guard.when == "immediate"

    def _guard(self, curve: RDCurve) -> tuple[RDCurve, bool, float | None]:
        """Judge the pending ComCNN turn: (curve, rolled back, gain with the ComCNN from before it)."""
        if not self._guard_due():
            return curve, False, None
        guard, before, self.com_pending = self.config.training.guard, self.com_pending, None
        after = self._encoder_weights()
        self._load_encoder_weights(before)
        baseline_curve = self.evaluate_dev()
        baseline_gain = operating_gain(baseline_curve, self.dev_jpeg)
        score, baseline = self.score(curve), self.score(baseline_curve)
        rate_judged = self.config.training.judge == "rate"
        if score >= baseline - (guard.tolerance_pct if rate_judged else guard.tolerance_db):
            self._load_encoder_weights(after)
            return curve, False, baseline_gain
        self.opt_com.load_state_dict(before["optim"])
        if self.opt_tables is not None:
            self.opt_tables.load_state_dict(before["optim_tables"])
        self.com_lr_scale *= guard.lr_cut
        unit = "% of JPEG's bytes saved" if rate_judged else "dB"
        self.log(
            f"guard: the ComCNN turn scores {score:+.3f}, the ComCNN before it {baseline:+.3f} ({unit}) "
            f"behind the same RecCNN; rolled back, ComCNN lr x{self.com_lr_scale:.3g}"
        )
        return baseline_curve, True, baseline_gain

    def end_epoch(self, started: float, partial: bool = False) -> EpochRecord:
        self._drop_look_ahead()
        curve, rolled_back, com_baseline = self._guard(self.evaluate_dev())
        mean = operating_point(curve)
        record = EpochRecord(
            epoch=self.epoch if not partial else self.epoch + 1,
            step=self.step,
            turns=list(self.epoch_turns),
            seconds=time.monotonic() - started,
            lr_com=self.opt_com.param_groups[0]["lr"],
            lr_rec=self.opt_rec.param_groups[0]["lr"],
            loss_rec=_mean_or_none(self.epoch_losses["rec"]),
            loss_com=_mean_or_none(self.epoch_losses["com"]),
            train_bpp=_mean_or_none(self.epoch_bpp),
            dev_bpp=mean.bpp,
            dev_msssim=mean.msssim,
            dev_msssim_db=mean.msssim_db,
            dev_psnr=mean.psnr,
            dev_gain_db=operating_gain(curve, self.dev_jpeg),
            rolled_back=rolled_back,
            com_baseline_gain_db=com_baseline,
            partial=partial,
            dev_points=[point.to_dict() for point in curve.points],
            dev_rate_change=operating_rate_change(curve, self.dev_jpeg),
        )
        self.history.append(record)
        self.dev_curve = curve
        self.save(self.out_dir / "last.ckpt")
        score = record.score(self.config.training.judge)
        if score > self.best_score:
            self.best_score = score
            self.save(self.out_dir / "best.ckpt")
        self.log(_format_record(record))
        self._reset_epoch_stats()
        if self.callback is not None:
            self.callback(record, self)
        return record

    # ---- the loop -------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        budget = self.config.training.time_budget_s
        self.clock_start = epoch_start = time.monotonic()
        stopped_by_budget = False
        self.log(
            f"training on {self.device} ({self.config.training.gradient_mode}, ratio {self.model.ratio}, "
            f"{self.total_steps} steps, MS-SSIM loss on {self.loss_levels} scales); "
            + format_cost(config_cost(self.config.model))
        )
        try:
            while self.step < self.total_steps:
                self.train_step()
                over_budget = budget is not None and self.elapsed_s() > budget
                if self.step % self.config.training.steps_per_epoch == 0:
                    self.end_epoch(epoch_start)
                    epoch_start = time.monotonic()
                elif over_budget:
                    self.end_epoch(epoch_start, partial=True)
                if over_budget:
                    stopped_by_budget = self.step < self.total_steps
                    self.log(f"time budget of {budget:.0f}s reached at step {self.step}")
                    break
                if self.stop_requested:
                    self._drop_look_ahead()
                    self.save(self.out_dir / "last.ckpt")
                    raise TrainingInterrupted(f"stopped at step {self.step}; resume from {self.out_dir}")
        finally:
            self.elapsed_before, self.clock_start = self.elapsed_s(), None
            self._close_batches()
            self.channel.close()
        if not self.history:  # resumed a finished run: report where it ended
            raise CheckpointError("nothing to train: the checkpoint already holds every epoch")
        return TrainResult(
            self.history, self.dev_curve, self.dev_jpeg, self.out_dir / "last.ckpt", stopped_by_budget
        )

    def request_stop(self) -> None:
        """Ask the loop to checkpoint after the current step and raise :class:`TrainingInterrupted`.

        Safe to call from a signal handler: it only sets a flag.
        """
        self.stop_requested = True

    # ---- checkpoints ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state(), **self.input_rng}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "config": self.config.model_dump_json(),
            "step": self.step,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optim_com": self.opt_com.state_dict(),
            "optim_rec": self.opt_rec.state_dict(),
            "com_lr_scale": self.com_lr_scale,
            "com_pending": self.com_pending,
            "rec_after_com": self.rec_after_com,
            "best_score": self.best_score,
            "elapsed_s": self.elapsed_s(),
            "rng": rng,
            "history": json.dumps([asdict(record) for record in self.history]),
            **self._tables_state(),
        }

    def _tables_state(self) -> dict:
        if self.tables is None:
            return {}
        return {
            "tables": self.tables.state_dict(),
            "optim_tables": self.opt_tables.state_dict(),
            LEARNED_TABLES_KEY: [list(row) for row in self.tables.integer_base()],
        }

    def save(self, path: Path) -> Path:
        return save_checkpoint(path, self.state_dict())

    def load_state_dict(self, state: dict) -> None:
        stored = TrainConfig.model_validate_json(state["config"])
        if _resume_key(stored) != _resume_key(self.config):
            raise CheckpointError("checkpoint was trained with another config; refusing to resume")
        self.step = int(state["step"])
        self.model.load_state_dict(state["model"])
        self.opt_com.load_state_dict(state["optim_com"])
        self.opt_rec.load_state_dict(state["optim_rec"])
        self.com_lr_scale = float(state["com_lr_scale"])
        self.com_pending = state.get("com_pending")  # absent from checkpoints of earlier versions
        self.rec_after_com = bool(state.get("rec_after_com", False))
        self.best_score = float(state.get("best_score", state.get("best_gain")))  # "best_gain" before judges
        if self.tables is not None:
            self.tables.load_state_dict(state["tables"])
            self.opt_tables.load_state_dict(state["optim_tables"])
            self._sync_codec_tables()
        self.elapsed_before = float(state["elapsed_s"])
        self._close_batches()
        torch.set_rng_state(state["rng"]["torch"])
        self.input_rng = {"sampler": state["rng"]["sampler"], "quality": state["rng"]["quality"]}
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.history = [EpochRecord(**record) for record in json.loads(state["history"])]
        if self.history:
            points = [RDPoint.from_dict(point) for point in self.history[-1].dev_points]
            self.dev_curve = RDCurve("shrink", points)
        self._reset_epoch_stats()

    def resume(self, path: str | Path) -> None:
        # Loaded on the CPU: load_state_dict places weights and optimiser moments on the model's device,
        # while RNG states must stay CPU tensors and Adam's step counts CPU scalars (no sync to read them).
        self.load_state_dict(load_checkpoint(path, map_location="cpu"))
        self.log(f"resumed from {path} at step {self.step} (epoch {self.epoch})")


def load_dev_images(data: DataConfig) -> list[NamedImage]:
    images = load_images(data.dev, limit=data.dev_max_images)
    return [
        NamedImage(image.name, center_crop(image.pixels, data.dev_max_side, data.dev_side_multiple))
        for image in images
    ]


def dev_fingerprint(data: DataConfig) -> str:
    """sha256 of the dev images :func:`load_dev_images` selects (names and file bytes): equal fingerprints,
    equal dev sets, wherever the folder is mounted."""
    return fingerprint_images(data.dev, limit=data.dev_max_images)


def dev_jpeg_curve(dev_images: list[NamedImage]) -> RDCurve:
    """The JPEG anchor for dev gains: many qualities, so interpolation at any trained rate is tight."""
    return codec_curve(dev_images, JpegCodec(), DEV_JPEG_QUALITIES)


def _resume_key(config: TrainConfig) -> dict:
    """What must match to resume: everything but the length of the run and the device."""
    data = config.model_dump()
    data["training"].pop("epochs")
    data["training"].pop("time_budget_s")
    data.pop("device")
    return data


def _mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _format_record(record: EpochRecord) -> str:
    losses = " ".join(
        f"{name}={value:.4f}"
        for name, value in (("loss_rec", record.loss_rec), ("loss_com", record.loss_com))
        if value is not None
    )
    flag = " (rolled back)" if record.rolled_back else ""
    rate = "" if record.dev_rate_change is None else f", rate {100 * record.dev_rate_change:+.1f}%"
    return (
        f"epoch {record.epoch:3d} step {record.step:6d} [{'/'.join(record.turns)}] {losses} | dev "
        f"bpp {record.dev_bpp:.3f} MS-SSIM {record.dev_msssim:.4f} ({record.dev_msssim_db:.2f} dB) "
        f"PSNR {record.dev_psnr:.2f} vs JPEG {record.dev_gain_db:+.3f} dB{rate}{flag} ({record.seconds:.0f}s)"
    )
