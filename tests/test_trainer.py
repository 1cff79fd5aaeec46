from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from shrink.compression.channel import stored_values
from shrink.compression.checkpoint import CheckpointError, load_checkpoint
from shrink.compression.config import config_from_dict
from shrink.compression.rd import RDCurve, RDPoint, operating_gain, operating_rate_change
from shrink.compression.trainer import (
    EpochRecord,
    NonFiniteLossError,
    Trainer,
    TrainingInterrupted,
    best_record,
    lr_factor,
)

from .conftest import tiny_config_dict


def quiet(_: str) -> None:
    pass


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}


@pytest.mark.parametrize("mode", ["identity", "straight-through", "proxy"])
def test_each_gradient_mode_trains_both_nets(image_folder: Path, tmp_path: Path, mode: str):
    config = config_from_dict(
        tiny_config_dict(
            image_folder,
            gradient_mode=mode,
            epochs=2,
            rec_warmup_epochs=0,
            first_turn="rec",
            steps_per_epoch=2,
            alternation_period=1,
        )
    )
    trainer = Trainer(config, tmp_path / mode, log=quiet)
    trainer.model.comcnn.head.weight.data.normal_(std=1e-3)  # start off the exact-bicubic fixed point
    before = weights(trainer)
    result = trainer.run()
    after = weights(trainer)
    changed = {name.split(".")[0] for name in before if not torch.equal(before[name], after[name])}
    assert changed == {"comcnn", "reccnn"}
    assert [record.turns for record in result.history] == [["rec", "com"], ["rec", "com"]]
    assert all(math.isfinite(record.dev_gain_db) for record in result.history)


def test_turn_schedule_warmup_then_alternation(tiny_config, tmp_path: Path):
    trainer = Trainer(tiny_config, tmp_path, log=quiet)
    # 3 steps/epoch, 1 warm-up epoch, one epoch per turn
    assert [trainer.turn_at(step) for step in range(12)] == ["rec"] * 3 + ["com"] * 3 + ["rec"] * 3 + [
        "com"
    ] * 3


@pytest.mark.parametrize("comcnn_norm", ["none", "batch"])
def test_resumed_run_equals_uninterrupted_run(image_folder: Path, tmp_path: Path, comcnn_norm: str):
    """Batch norm in the ComCNN: the next batch's compact image, computed ahead during the step the budget
    stops, must not reach the checkpoint's running statistics."""

    def config(**training):
        data = tiny_config_dict(image_folder, epochs=3, **training)
        data["model"]["comcnn"]["norm"] = comcnn_norm
        data["device"].update(prefetch_batches=2, overlap_codec=True)  # the pipeline a GPU gets by default
        return config_from_dict(data)

    full_config = config()
    full = Trainer(full_config, tmp_path / "full", log=quiet)
    full.run()

    first = Trainer(config(time_budget_s=1e-9), tmp_path / "split", log=quiet)
    first.run()  # stops after its first step: the budget is spent at once
    assert first.step == 1
    resumed = Trainer(full_config, tmp_path / "split", log=quiet)
    resumed.resume(tmp_path / "split" / "last.ckpt")
    resumed.run()

    assert resumed.step == full.step
    for name, tensor in full.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    assert full.opt_rec.state_dict()["state"][0]["exp_avg"].equal(
        resumed.opt_rec.state_dict()["state"][0]["exp_avg"]
    )
    assert [r.dev_gain_db for r in full.history] == [r.dev_gain_db for r in resumed.history if not r.partial]


def test_checkpoint_describes_itself(tiny_config, tmp_path: Path):
    Trainer(
        tiny_config.model_copy(update={"training": tiny_config.training.model_copy(update={"epochs": 1})}),
        tmp_path,
        log=quiet,
    ).run()
    state = load_checkpoint(tmp_path / "last.ckpt")
    assert state["step"] == 3 and state["epoch"] == 1
    assert {"torch", "pillow", "python", "shrink"} <= set(state["versions"])
    assert '"ratio":2' in state["config"]
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_with_another_config_is_refused(image_folder: Path, tmp_path: Path):
    Trainer(config_from_dict(tiny_config_dict(image_folder, epochs=1)), tmp_path, log=quiet).run()
    other = config_from_dict(tiny_config_dict(image_folder, epochs=2, batch_size=3))
    with pytest.raises(CheckpointError, match="another config"):
        Trainer(other, tmp_path, log=quiet).resume(tmp_path / "last.ckpt")


def test_non_finite_loss_stops_the_run(tiny_config, tmp_path: Path):
    trainer = Trainer(tiny_config, tmp_path, log=quiet)
    with torch.no_grad():
        trainer.model.reccnn.head.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="non-finite RecCNN loss"):
        trainer.run()


def sabotage_comcnn_turns(record, trainer: Trainer) -> None:
    """Epoch callback: make every ComCNN step destructive (huge lr, no fidelity or range terms)."""
    trainer.config.optim_com.lr = 0.5
    trainer.config.loss.fidelity_weight = 0.0
    trainer.config.loss.range_weight = 0.0


def comcnn_weights_before_first_com_turn(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Runs ``trainer`` and returns the ComCNN as it was when its first turn began."""
    seen: dict[str, torch.Tensor] = {}
    original = trainer.com_step

    def remember_then_step(x, qualities):
        if not seen:
            seen.update({k: v.clone() for k, v in trainer.model.comcnn.state_dict().items()})
        return original(x, qualities)

    trainer.com_step = remember_then_step
    return seen


def guard_run(image_folder: Path, tmp_path: Path, epochs: int, scored_by: str = "gain", **guard):
    """``scored_by``: training.judge; ``guard``: training.guard."""
    config = config_from_dict(
        tiny_config_dict(image_folder, epochs=epochs, rec_warmup_epochs=1, judge=scored_by, guard=guard)
    )
    trainer = Trainer(config, tmp_path, log=quiet, callback=sabotage_comcnn_turns)
    trainer.model.comcnn.head.weight.data.normal_(std=1e-3)
    before = comcnn_weights_before_first_com_turn(trainer)
    return trainer, trainer.run().history, before


def test_guard_judges_a_comcnn_turn_after_the_next_reccnn_turn(image_folder: Path, tmp_path: Path):
    trainer, history, before = guard_run(image_folder, tmp_path, epochs=3)
    assert [record.turns for record in history] == [["rec"], ["com"], ["rec"]]
    assert not history[1].rolled_back and history[1].com_baseline_gain_db is None  # not judged yet
    judged = history[2]
    assert judged.rolled_back
    assert judged.dev_gain_db == judged.com_baseline_gain_db  # the record is the rolled-back model's
    for name, tensor in trainer.model.comcnn.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert trainer.com_lr_scale == pytest.approx(trainer.config.training.guard.lr_cut)
    assert trainer.com_pending is None


def test_guard_keeps_a_comcnn_turn_within_tolerance(image_folder: Path, tmp_path: Path):
    trainer, history, before = guard_run(image_folder, tmp_path, epochs=3, tolerance_db=100.0)
    judged = history[2]
    assert not judged.rolled_back and judged.com_baseline_gain_db is not None
    assert judged.dev_gain_db != judged.com_baseline_gain_db
    assert any(not torch.equal(t, before[n]) for n, t in trainer.model.comcnn.state_dict().items())
    assert trainer.com_lr_scale == 1.0


def test_rate_judge_guards_turns_and_picks_best_ckpt_by_dev_rate(image_folder: Path, tmp_path: Path):
    trainer, history, before = guard_run(image_folder, tmp_path / "strict", epochs=3, scored_by="rate")
    assert history[2].rolled_back  # the sabotaged turn costs bytes at equal quality too
    for name, tensor in trainer.model.comcnn.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    for record in history:  # both scores recorded from the epoch's own dev curve, whatever the judge
        curve = RDCurve("epoch", [RDPoint.from_dict(point) for point in record.dev_points])
        assert record.dev_rate_change == operating_rate_change(curve, trainer.dev_jpeg)
        assert record.dev_gain_db == operating_gain(curve, trainer.dev_jpeg)
    best = best_record(history, "rate")
    assert load_checkpoint(tmp_path / "strict" / "best.ckpt")["step"] == best.step
    assert trainer.best_score == -100 * best.dev_rate_change
    _, kept, _ = guard_run(image_folder, tmp_path / "tolerant", epochs=3, scored_by="rate", tolerance_pct=1e6)
    assert not kept[2].rolled_back and kept[2].com_baseline_gain_db is not None


def test_best_record_follows_the_judge():
    def record(epoch: int, gain: float, rate: float) -> EpochRecord:
        values = dict(dev_bpp=0.3, dev_msssim=0.9, dev_msssim_db=10.0, dev_psnr=25.0)
        return EpochRecord(epoch, epoch, ["rec"], 1.0, 0.0, 0.0, None, None, None, **values, dev_gain_db=gain,
                           dev_rate_change=rate)  # fmt: skip

    # epoch 2 gains more dB by spending bytes below JPEG's lowest rate; epoch 1 saves more at equal quality
    history = [record(1, 1.0, -0.30), record(2, 1.2, -0.25), record(3, 1.2, -0.20)]
    assert best_record(history, "gain").epoch == 2  # the first of equals
    assert best_record(history, "rate").epoch == 1
    with pytest.raises(ValueError, match="epoch 4 has no dev rate"):
        best_record([record(4, 1.0, None)], "rate")


def test_immediate_guard_judges_at_the_end_of_the_comcnn_turn(image_folder: Path, tmp_path: Path):
    trainer, history, before = guard_run(image_folder, tmp_path, epochs=2, when="immediate")
    assert history[1].turns == ["com"] and history[1].rolled_back
    # the RecCNN was frozen during the turn, so the ComCNN from before it scores what the last epoch did
    assert history[1].dev_gain_db == pytest.approx(history[0].dev_gain_db, abs=1e-9)
    for name, tensor in trainer.model.comcnn.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_resume_between_a_comcnn_turn_and_its_judgement(image_folder: Path, tmp_path: Path):
    def config():
        return config_from_dict(tiny_config_dict(image_folder, epochs=3))

    full = Trainer(config(), tmp_path / "full", log=quiet, callback=sabotage_comcnn_turns)
    full.run()

    def stop_after_com_epoch(record, trainer: Trainer) -> None:
        sabotage_comcnn_turns(record, trainer)
        if record.turns == ["com"]:
            trainer.request_stop()

    first = Trainer(config(), tmp_path / "split", log=quiet, callback=stop_after_com_epoch)
    with pytest.raises(TrainingInterrupted):
        first.run()
    assert first.com_pending is not None
    resumed = Trainer(config(), tmp_path / "split", log=quiet, callback=sabotage_comcnn_turns)
    resumed.config.optim_com.lr = 0.5  # what the first run's callbacks had set
    resumed.config.loss.fidelity_weight = resumed.config.loss.range_weight = 0.0
    resumed.resume(tmp_path / "split" / "last.ckpt")
    resumed.run()

    judged = [(r.rolled_back, r.com_baseline_gain_db) for r in full.history]
    assert judged[-1][1] is not None
    assert judged == [(r.rolled_back, r.com_baseline_gain_db) for r in resumed.history]
    for name, tensor in full.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name


def proxy_rate_after_comcnn_steps(image_folder: Path, tmp_path: Path, slope_db: float) -> tuple[float, float]:
    """Mean JPEG rate proxy (scan bits) of one batch before and after 12 'gain'-loss ComCNN steps on it."""
    loss = {"com_loss": "gain", "gain_slope_db": slope_db, "fidelity_weight": 0.0}
    config_dict = {**tiny_config_dict(image_folder), "loss": loss, "optim_com": {"lr": 3e-3}}
    trainer = Trainer(config_from_dict(config_dict), tmp_path / str(slope_db), log=quiet)
    x = trainer.sampler.sample(4)

    def rate() -> float:
        with torch.no_grad():
            compact = trainer.model.compress(x)["compact"]
            qualities = trainer.channel.quality_tensor([50] * 4, x.device)
            return trainer.channel.proxy(stored_values(compact), qualities)["scan_bits"].mean().item()

    before = rate()
    for _ in range(12):
        assert math.isfinite(trainer.com_step(x, [50] * 4))
    return before, rate()


def test_gain_loss_prices_the_rate_proxy(image_folder: Path, tmp_path: Path):
    """The 'gain' ComCNN loss trades MS-SSIM dB against ln-rate: a high price of rate makes the ComCNN
    shrink the file, a negligible one lets it spend bytes on quality."""
    before, expensive = proxy_rate_after_comcnn_steps(image_folder, tmp_path, slope_db=200.0)
    _, cheap = proxy_rate_after_comcnn_steps(image_folder, tmp_path, slope_db=1e-3)
    assert expensive < 0.9 * before
    assert cheap > expensive


def test_cosine_schedule_ends_at_the_floor():
    from shrink.compression.config import OptimizerConfig

    config = OptimizerConfig(lr=1.0, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(config, 0, 100) == pytest.approx(1.0)
    assert lr_factor(config, 100, 100) == pytest.approx(0.1)
    assert lr_factor(OptimizerConfig(schedule="step", step_every=10, step_gamma=0.5), 25, 100) == 0.25


def test_cosine_runs_over_the_larger_share_of_steps_or_time():
    from shrink.compression.config import OptimizerConfig

    config = OptimizerConfig(lr=1.0, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(config, 10, 100, time_share=1.0) == pytest.approx(0.1)  # the clock ran out first
    assert lr_factor(config, 10, 100, time_share=3.0) == pytest.approx(0.1)  # and stays at the floor
    assert lr_factor(config, 50, 100, time_share=0.2) == lr_factor(config, 50, 100)  # the steps lead
    assert lr_factor(config, 20, 100, time_share=0.5) == pytest.approx(0.55)  # half the time: mid-cosine


@pytest.mark.parametrize("clock", ["steps", "budget"])
def test_trainer_learning_rate_follows_its_schedule_clock(image_folder: Path, tmp_path: Path, clock: str):
    config = config_from_dict(tiny_config_dict(image_folder, time_budget_s=100.0, schedule_clock=clock))
    trainer = Trainer(config, tmp_path, log=quiet)
    trainer.elapsed_before = 100.0  # as if resumed with its whole time budget spent, at step 0
    trainer._set_learning_rates()
    factor = trainer.opt_rec.param_groups[0]["lr"] / config.optim_rec.lr
    assert factor == pytest.approx(1.0 if clock == "steps" else config.optim_rec.min_lr_ratio)


def test_budget_clock_without_a_budget_is_refused(image_folder: Path):
    with pytest.raises(ValueError, match="schedule_clock = 'budget' needs time_budget_s"):
        config_from_dict(tiny_config_dict(image_folder, schedule_clock="budget"))


def test_checkpoints_count_the_running_session_in_elapsed_time(tiny_config, tmp_path: Path):
    """A run killed without a graceful stop resumes from its last epoch's checkpoint: that checkpoint must
    hold the time already spent, or the resumed run would get its whole time budget again."""
    trainer = Trainer(tiny_config, tmp_path, log=quiet)
    trainer.run()
    elapsed = load_checkpoint(tmp_path / "last.ckpt")["elapsed_s"]
    assert 0.0 < elapsed <= trainer.elapsed_before
    assert trainer.elapsed_s() == trainer.elapsed_before  # the clock stops with the run


def test_warmup_ramps_each_net_over_its_own_steps_and_resumes_with_its_optimizer():
    from shrink.compression.config import OptimizerConfig
    from shrink.compression.trainer import make_optimizer, optimizer_steps

    config = OptimizerConfig(lr=1.0, schedule="cosine", min_lr_ratio=0.1, warmup_steps=4)
    cosine = OptimizerConfig(lr=1.0, schedule="cosine", min_lr_ratio=0.1)
    # a ComCNN whose first turn comes at global step 50: its warm-up starts then, not at step 0
    ramp = [lr_factor(config, 50 + k, 100, own_steps=k) / lr_factor(cosine, 50 + k, 100) for k in range(6)]
    assert ramp == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = make_optimizer([weight], config)
    assert optimizer_steps(optimizer) == 0
    for _ in range(3):
        optimizer.zero_grad()
        weight.sum().backward()
        optimizer.step()
    restored = make_optimizer([torch.nn.Parameter(torch.ones(2))], config)
    restored.load_state_dict(optimizer.state_dict())
    assert optimizer_steps(optimizer) == optimizer_steps(restored) == 3
