from __future__ import annotations

import math

import pytest
import pytorch_msssim
import torch

from shrink.compression.metrics import (
    bpp,
    gain_units_loss,
    ms_ssim,
    ms_ssim_levels,
    ms_ssim_train,
    ms_ssim_train_per_image,
    msssim_db,
    psnr,
    reconstruction_loss,
)


def _pair(size: int, noise: float, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size, size, generator=generator)
    x = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2)  # some structure for SSIM to see
    y = (x + noise * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    return x, y


def test_psnr_of_known_mse() -> None:
    x = torch.zeros(2, 3, 8, 8)
    y = x.clone()
    y[0] += 0.1  # MSE 0.01 -> 20 dB
    y[1] += 0.01  # MSE 1e-4 -> 40 dB
    assert psnr(y, x).tolist() == pytest.approx([20.0, 40.0], abs=1e-4)


def test_ms_ssim_identical_is_one_and_noise_lowers_it() -> None:
    x, y = _pair(192, 0.1)
    assert ms_ssim(x, x).shape == (2,)
    assert torch.allclose(ms_ssim(x, x), torch.ones(2), atol=1e-5)
    noisy = ms_ssim(y, x)
    assert torch.all(noisy < 0.99)
    assert torch.all(noisy > 0)


def test_ms_ssim_rejects_small_images() -> None:
    x, _ = _pair(128, 0.0)
    with pytest.raises(ValueError, match="160"):
        ms_ssim(x, x)


LEVELS = [(10, 0), (11, 1), (64, 3), (128, 4), (160, 4), (161, 5), (512, 5)]


@pytest.mark.parametrize(("side", "levels"), LEVELS)
def test_ms_ssim_levels(side: int, levels: int) -> None:
    assert ms_ssim_levels(side, 1000) == levels
    assert ms_ssim_levels(1000, side) == levels


def test_ms_ssim_train_matches_pytorch_msssim_at_five_levels() -> None:
    x, y = _pair(176, 0.05, batch=3)
    reference = pytorch_msssim.ms_ssim(y, x, data_range=1.0)
    # channels_last changes only the summation order inside the convolutions: float32 rounding, no more
    torch.testing.assert_close(ms_ssim_train(y, x), reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(ms_ssim_train(y, x, levels=5), reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [64, 128])
def test_ms_ssim_train_small_crops_are_differentiable(size: int) -> None:
    x, y = _pair(size, 0.1)
    y = y.clone().requires_grad_(True)
    value = ms_ssim_train(y, x)
    assert 0.0 < value.item() < 1.0
    value.backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    assert ms_ssim_train(x, x).item() == pytest.approx(1.0, abs=1e-5)


def test_ms_ssim_train_fewer_levels_renormalises_weights() -> None:
    x, y = _pair(64, 0.1)
    # One level is plain SSIM (weight renormalised to 1).
    assert ms_ssim_train(y, x, levels=1).item() == pytest.approx(
        pytorch_msssim.ssim(y, x, data_range=1.0).item(), abs=1e-6
    )
    with pytest.raises(ValueError, match="levels"):
        ms_ssim_train(y, x, levels=4)


def test_msssim_db_known_values() -> None:
    assert msssim_db(0.9) == pytest.approx(10.0)
    assert msssim_db(0.99) == pytest.approx(20.0)
    assert msssim_db(0.0) == pytest.approx(0.0)
    assert math.isfinite(msssim_db(1.0)) and msssim_db(1.0) > 60


def test_bpp() -> None:
    assert bpp(1000, 100, 80) == pytest.approx(1.0)
    assert bpp(49152, 512, 768) == pytest.approx(1.0)
    assert bpp(3, 2, 3) == pytest.approx(4.0)


def test_reconstruction_loss_weights() -> None:
    x, y = _pair(64, 0.1)
    mse = torch.mean((y - x) ** 2)
    pure_mse = reconstruction_loss(y, x, alpha=1.0, mse_scale=100.0).item()
    assert pure_mse == pytest.approx(100 * mse.item(), rel=1e-5)
    assert reconstruction_loss(y, x, alpha=0.0, mse_scale=100.0).item() == pytest.approx(
        1 - ms_ssim_train(y, x).item(), rel=1e-5
    )
    mixed = reconstruction_loss(y, x, alpha=0.25, mse_scale=10.0).item()
    assert mixed == pytest.approx(0.25 * 10 * mse.item() + 0.75 * (1 - ms_ssim_train(y, x).item()), rel=1e-5)
    assert reconstruction_loss(x, x, alpha=0.5, mse_scale=100.0).item() == pytest.approx(0.0, abs=1e-5)


def test_reconstruction_loss_skips_zero_weight_term() -> None:
    # 8 px is too small for any SSIM window: only a skipped MS-SSIM term lets alpha=1 work.
    x, y = _pair(8, 0.1)
    assert torch.isfinite(reconstruction_loss(y, x, alpha=1.0, mse_scale=1.0))
    with pytest.raises(ValueError):
        reconstruction_loss(y, x, alpha=0.5, mse_scale=1.0)


def test_ms_ssim_train_per_image_matches_pytorch_msssim_and_averages_to_the_batch_value() -> None:
    x, y = _pair(192, 0.05, batch=3)
    y[1] = x[1]  # one perfect image among noisy ones
    per_image = ms_ssim_train_per_image(y, x)
    reference = pytorch_msssim.ms_ssim(y, x, data_range=1.0, size_average=False)
    assert per_image.shape == (3,)
    torch.testing.assert_close(per_image, reference, rtol=0, atol=1e-6)
    assert per_image[1].item() == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(ms_ssim_train(y, x), per_image.mean(), rtol=0, atol=1e-7)


def test_gain_units_loss_is_minus_db_plus_the_price_of_log_rate() -> None:
    x, y = _pair(128, 0.05, batch=2)
    rate = torch.tensor([0.5, 2.0])
    db = -10 * torch.log10(1 - ms_ssim_train_per_image(y, x))
    expected = (5.0 * torch.log(rate) - db).mean()
    torch.testing.assert_close(gain_units_loss(y, x, rate, 5.0), expected)
    # Doubling every rate costs slope * ln 2, whatever the proxy's scale; better images lower the loss.
    doubled = gain_units_loss(y, x, 2 * rate, 5.0) - gain_units_loss(y, x, rate, 5.0)
    assert doubled.item() == pytest.approx(5.0 * math.log(2), rel=1e-5)
    assert gain_units_loss(x, x, rate, 5.0) < gain_units_loss(y, x, rate, 5.0)
    rate.requires_grad_(True)
    gain_units_loss(y, x, rate, 5.0).backward()
    torch.testing.assert_close(rate.grad, 5.0 / (2 * rate.detach()))
