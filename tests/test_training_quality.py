"""The failure modes measured on the paper's scheme must not come back: collapse, and ending worse."""

from __future__ import annotations

from pathlib import Path

import pytest

from shrink.compression.config import load_config
from shrink.compression.evaluate import evaluate
from shrink.compression.rd import operating_gain
from shrink.compression.trainer import Trainer

from .conftest import REPO, shared_folder

SHORT = [
    "training.steps_per_epoch=30",
    "training.rec_warmup_epochs=1",
    "training.time_budget_s=600",
    "data.dev_max_images=4",
    "data.dev_max_side=256",
    "data.dev_qualities=[10, 50, 90]",
]


def short_cpu_preset(*overrides: str):
    shared_folder("train")
    shared_folder("dev")
    return load_config(REPO / "studies" / "presets" / "cpu.toml", [*SHORT, *overrides])


def untrained_dev_curve(trainer: Trainer):
    return evaluate(trainer.model, trainer.dev_images, trainer.config.data.dev_qualities, trainer.codec)


@pytest.mark.slow
def test_cpu_preset_ends_no_worse_than_where_it_started(tmp_path: Path):
    trainer = Trainer(short_cpu_preset("training.epochs=5"), tmp_path, log=lambda _: None)
    start = untrained_dev_curve(trainer)
    start_gain = operating_gain(start, trainer.dev_jpeg)
    result = trainer.run()
    assert "com" in {turn for record in result.history for turn in record.turns}
    assert result.history[-1].dev_gain_db >= start_gain


@pytest.mark.slow
def test_an_aggressive_comcnn_does_not_collapse(tmp_path: Path):
    """No guard, 20x the ComCNN learning rate, no fidelity term: the range penalty and rate proxy must still
    keep the compact image a picture (the original failure: every file ~0.017 bpp at every quality)."""
    config = short_cpu_preset(
        "training.epochs=4",
        "training.first_turn=com",
        "training.guard.enabled=false",
        "optim_com.lr=1e-3",
        "loss.fidelity_weight=0",
    )
    trainer = Trainer(config, tmp_path, log=lambda _: None)
    start = untrained_dev_curve(trainer)
    result = trainer.run()
    assert [record.turns for record in result.history] == [["rec"], ["com"], ["rec"], ["com"]]
    assert not any(record.rolled_back for record in result.history)
    for before, after in zip(start.points, result.dev_curve.points, strict=True):
        assert after.bpp > 0.6 * before.bpp, (before, after)
    rates = [point.bpp for point in result.dev_curve.points]
    assert rates == sorted(rates) and rates[-1] > 2 * rates[0]  # the rate still follows the quality knob
