"""What breaks on a GPU, tested where it can be on the CPU: bf16 autocast must not reach the losses, and a
checkpoint must resume whatever the training device. The CUDA-only tests skip without a GPU
(``benchmarks/gpu_check.sh`` runs them on a GPU machine)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from shrink.compression.checkpoint import load_checkpoint
from shrink.compression.config import config_from_dict
from shrink.compression.metrics import gain_units_loss, ms_ssim, reconstruction_loss
from shrink.compression.trainer import Trainer

from .conftest import textured_image, tiny_config_dict

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def quiet(_: str) -> None:
    pass


def photo_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """Two photo-like 192 px crops and their JPEG-like degradations (smoothed, with noise)."""
    x = torch.stack([torch.from_numpy(textured_image(192, 192, seed)).permute(2, 0, 1) for seed in (1, 2)])
    x = x.float() / 255.0
    blurred = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return x, (blurred + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)


def value_and_gradient(loss_of, y: torch.Tensor, autocast: bool) -> tuple[float, torch.Tensor]:
    y = y.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = loss_of(y)
    (gradient,) = torch.autograd.grad(loss, y)
    return loss.item(), gradient


@pytest.mark.parametrize(
    "name, loss_of",
    [
        ("MS-SSIM", lambda y, x: reconstruction_loss(y, x, 0.0, 1.0)),
        ("mixture", lambda y, x: reconstruction_loss(y, x, 0.5, 100.0)),
        ("gain", lambda y, x: gain_units_loss(y, x, torch.tensor([900.0, 1100.0]), 2.0)),
    ],
)
def test_losses_under_bf16_autocast_equal_float32(name, loss_of):
    x, y = photo_pairs()
    full, full_gradient = value_and_gradient(lambda y: loss_of(y, x), y, autocast=False)
    mixed, mixed_gradient = value_and_gradient(lambda y: loss_of(y, x), y, autocast=True)
    assert mixed == pytest.approx(full, rel=1e-5), name
    assert torch.allclose(mixed_gradient, full_gradient, rtol=1e-4, atol=1e-9), name
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(ms_ssim(y, x), ms_ssim(y, x).detach())
        assert ms_ssim(y, x).dtype == torch.float32 and bool((ms_ssim(y, x) < 1).all())


def turn_gradients(trainer: Trainer, turn: str, x: torch.Tensor, qualities: list[int]):
    """(loss, gradient of the turn's net) of one step whose optimiser step changes nothing (lr 0)."""
    for optimizer in (trainer.opt_com, trainer.opt_rec):
        for group in optimizer.param_groups:
            group["lr"] = 0.0
    net = trainer.model.reccnn if turn == "rec" else trainer.model.comcnn
    trainer.model.train()
    loss = trainer.rec_step(x, qualities) if turn == "rec" else trainer.com_step(x, qualities)
    return loss, torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])


@pytest.mark.parametrize("turn", ["rec", "com"])
def test_both_turns_under_bf16_autocast_follow_float32(image_folder: Path, tmp_path: Path, turn: str):
    """The nets run in bf16, the losses in float32: the loss and the gradient stay close to float32's (the
    loss in bf16 gave gradients at cosine 0.24-0.61)."""
    data = tiny_config_dict(image_folder, crop=96)
    data["model"]["reccnn"]["dropout"] = 0.0
    data["model"]["comcnn"]["norm"] = data["model"]["reccnn"]["norm"] = "none"
    trainer = Trainer(config_from_dict(data), tmp_path, log=quiet)
    trainer.model.comcnn.head.weight.data.normal_(std=1e-2)  # off the exact-bicubic start: real gradients
    trainer.model.reccnn.head.weight.data.normal_(std=1e-2)
    x, qualities = trainer.sampler.sample(4), [30, 50, 70, 90]
    full, full_gradient = turn_gradients(trainer, turn, x, qualities)
    trainer.use_amp = True  # what a CUDA device gets; autocast on the trainer's device, here the CPU
    mixed, mixed_gradient = turn_gradients(trainer, turn, x, qualities)
    assert mixed == pytest.approx(full, rel=0.02)
    assert F.cosine_similarity(mixed_gradient, full_gradient, dim=0) > 0.97


def test_resume_loads_on_the_cpu_whatever_the_training_device(image_folder: Path, tmp_path: Path):
    """A trainer on another device (``meta`` stands in for CUDA) resumes: RNG states stay CPU tensors and
    Adam's step counts CPU scalars; loading onto the training device broke ``torch.set_rng_state``."""
    config = config_from_dict(tiny_config_dict(image_folder, epochs=1))
    Trainer(config, tmp_path, log=quiet).run()
    state = load_checkpoint(tmp_path / "last.ckpt")
    resumed = Trainer(config, tmp_path, log=quiet)
    resumed.device = torch.device("meta")
    resumed.resume(tmp_path / "last.ckpt")
    assert resumed.step == 3
    assert torch.equal(torch.get_rng_state(), state["rng"]["torch"])
    assert torch.equal(resumed.input_rng["sampler"], state["rng"]["sampler"])
    steps = [s["step"] for s in resumed.opt_rec.state_dict()["state"].values()]
    assert steps and all(step.device.type == "cpu" for step in steps)


# ---- CUDA only --------------------------------------------------------------------------------------------


@CUDA
def test_cuda_run_killed_and_resumed_finishes(image_folder: Path, tmp_path: Path):
    """`shrink train` on CUDA, killed with SIGKILL once its first epoch is checkpointed, then resumed."""
    from .helpers import write_toml

    data = tiny_config_dict(image_folder, epochs=40, steps_per_epoch=20)
    data["device"] = {"device": "cuda"}
    config = write_toml(tmp_path / "cuda.toml", data)
    command = [sys.executable, "-m", "shrink.search.cli", "train", "--config", str(config), "--out"]
    out = tmp_path / "run"
    process = subprocess.Popen(
        [*command, str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path
    )
    deadline = time.monotonic() + 240
    while not (out / "last.ckpt").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert (out / "last.ckpt").exists(), process.stderr.read().decode()
    killed_at = load_checkpoint(out / "last.ckpt")["step"]
    resumed = subprocess.run(
        [*command, str(out), "--resume", "--set", "training.epochs=" + str(killed_at // 20 + 2)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    assert load_checkpoint(out / "last.ckpt")["step"] == (killed_at // 20 + 2) * 20


@CUDA
@pytest.mark.parametrize("turn", ["rec", "com"])
def test_cuda_turns_under_bf16_follow_float32(image_folder: Path, tmp_path: Path, turn: str):
    data = tiny_config_dict(image_folder, crop=96)
    data["model"]["reccnn"]["dropout"] = 0.0
    data["model"]["comcnn"]["norm"] = data["model"]["reccnn"]["norm"] = "none"
    data["device"] = {"device": "cuda", "amp": False, "cudnn_benchmark": False}
    trainer = Trainer(config_from_dict(data), tmp_path, log=quiet)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    trainer.model.comcnn.head.weight.data.normal_(std=1e-2)
    trainer.model.reccnn.head.weight.data.normal_(std=1e-2)
    x, qualities = trainer.sampler.sample(4).cuda(), [30, 50, 70, 90]
    full, full_gradient = turn_gradients(trainer, turn, x, qualities)
    trainer.use_amp = True
    mixed, mixed_gradient = turn_gradients(trainer, turn, x, qualities)
    assert mixed == pytest.approx(full, rel=0.02)
    assert F.cosine_similarity(mixed_gradient, full_gradient, dim=0) > 0.97
