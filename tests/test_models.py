from __future__ import annotations

import pytest
import torch

from shrink.compression.config import ModelConfig
from shrink.compression.models import MODELS, assert_disjoint, build_model
from shrink.compression.resample import bicubic_down, bicubic_up


def small_model(ratio: int, norm: str = "none", depth: int = 3):
    return build_model(
        ModelConfig(
            ratio=ratio,
            comcnn={"depth": depth, "width": 8, "norm": norm},
            reccnn={"depth": 4, "width": 8, "norm": norm, "dropout": 0.1},
        )
    )


@pytest.mark.parametrize("ratio", [1, 2, 3, 4])
@pytest.mark.parametrize("depth", [2, 3, 5])
def test_compact_is_one_ratio_th_of_the_size(ratio: int, depth: int):
    model = small_model(ratio, depth=depth)
    x = torch.rand(2, 3, 48, 72)
    out = model.compress(x)
    assert set(out) == {"compact", "base"}
    assert out["compact"].shape == (2, 3, 48 // ratio, 72 // ratio)
    recon = model.reconstruct(out["compact"], (48, 72))
    assert set(recon) == {"up", "residual", "x_hat"}
    assert recon["x_hat"].shape == x.shape


@pytest.mark.parametrize("norm", ["none", "batch", "group"])
def test_untrained_model_is_exactly_bicubic_down_and_up(norm: str):
    model = small_model(2, norm).eval()
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        compact = model.compress(x)["compact"]
        x_hat = model.reconstruct(compact, (32, 48))["x_hat"]
    assert torch.equal(compact, bicubic_down(x, 2))
    assert torch.equal(x_hat, bicubic_up(bicubic_down(x, 2), (32, 48)))


def test_forward_returns_fixed_keys_and_passes_gradient_to_both_nets():
    model = small_model(2)
    torch.nn.init.normal_(model.comcnn.head.weight, std=0.01)
    torch.nn.init.normal_(model.reccnn.head.weight, std=0.01)
    x = torch.rand(2, 3, 32, 32)
    out = model(x, channel=lambda compact: compact)
    assert set(out) == {"compact", "base", "decoded", "up", "residual", "x_hat"}
    out["x_hat"].sum().backward()
    assert model.comcnn.head.weight.grad.abs().sum() > 0
    assert model.reccnn.head.weight.grad.abs().sum() > 0


def test_parameter_groups_are_disjoint_and_cover_the_model():
    model = small_model(2, "batch")
    groups = model.parameter_groups()
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}


def test_assert_disjoint_rejects_a_shared_parameter():
    shared = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(AssertionError, match="shared"):
        assert_disjoint({"a": [shared], "b": [shared]})


def test_registry_maps_names_to_builders():
    assert "shrink" in MODELS
    with pytest.raises(ValueError, match="unknown model"):
        build_model(ModelConfig(name="nope"))
