"""ComCNN and RecCNN (Jiang et al. 2017), each built as a residual around bicubic resampling.

An untrained model is exactly downscale + codec + bicubic: both output layers start at zero, so a search
starts from the baseline and can only be judged on what training adds. Models return dicts with fixed keys.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .config import ConvStackConfig, ModelConfig
from .resample import bicubic_down, bicubic_up

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.2, inplace=True),
    "gelu": nn.GELU,
    "silu": lambda: nn.SiLU(inplace=True),
}


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


def _conv_block(cfg: ConvStackConfig, in_ch: int, kernel: int = 3, stride: int = 1, norm: bool = True):
    padding = (kernel - 1) // 2 if stride <= 2 else 0
    use_norm = norm and cfg.norm != "none"
    layers: list[nn.Module] = [nn.Conv2d(in_ch, cfg.width, kernel, stride, padding, bias=not use_norm)]
    if use_norm:
        layers.append(_norm(cfg.norm, cfg.width))
    layers.append(ACTIVATIONS[cfg.activation]())
    if cfg.dropout > 0:
        layers.append(nn.Dropout2d(cfg.dropout))
    return layers


def _he_init(module: nn.Module) -> None:
    # PyTorch's default conv init shrinks activations layer by layer; a 10-layer plain stack then barely
    # trains. He (Kaiming) init keeps their scale, as in VDSR-style residual CNNs.
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def _body_and_zero_head(layers: list[nn.Module], width: int) -> tuple[nn.Sequential, nn.Conv2d]:
    body = nn.Sequential(*layers)
    _he_init(body)
    return body, _zero_conv(width)


def _zero_conv(in_ch: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, 3, 3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _downsampling_kernel(ratio: int) -> int:
    # ratio 2: 3x3/2 with padding 1 (the paper's conv2); 3 and 4: non-overlapping ratio x ratio patches.
    return 3 if ratio <= 2 else ratio


class ComCNN(nn.Module):
    """x -> compact image at 1/ratio: ``bicubic_down(x) + correction(x)``, correction starting at zero."""

    def __init__(self, cfg: ConvStackConfig, ratio: int):
        super().__init__()
        self.ratio = ratio
        layers: list[nn.Module] = []
        if cfg.depth >= 3:  # the paper: a full-resolution conv before the strided one
            layers += _conv_block(cfg, 3, norm=False)
        first_in = cfg.width if cfg.depth >= 3 else 3
        layers += _conv_block(cfg, first_in, kernel=_downsampling_kernel(ratio), stride=ratio)
        for _ in range(cfg.depth - 3):
            layers += _conv_block(cfg, cfg.width)
        self.body, self.head = _body_and_zero_head(layers, cfg.width)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        base = bicubic_down(x, self.ratio)
        correction = self.head(self.body(x - 0.5))
        return {"compact": base + correction, "base": base}


class RecCNN(nn.Module):
    """Upscaled decoded image -> ``up + residual``, the residual's last layer starting at zero."""

    def __init__(self, cfg: ConvStackConfig):
        super().__init__()
        layers = _conv_block(cfg, 3, norm=False)
        for _ in range(cfg.depth - 2):
            layers += _conv_block(cfg, cfg.width)
        self.body, self.head = _body_and_zero_head(layers, cfg.width)

    def forward(self, up: torch.Tensor) -> dict[str, torch.Tensor]:
        residual = self.head(self.body(up - 0.5))
        return {"residual": residual, "x_hat": up + residual}


class ShrinkModel(nn.Module):
    """ComCNN + RecCNN. The codec sits between them and is supplied by the caller (see ``channel.py``)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.ratio = config.ratio
        self.comcnn = ComCNN(config.comcnn, config.ratio)
        self.reccnn = RecCNN(config.reccnn)

    def compress(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.comcnn(x)

    def reconstruct(self, decoded: torch.Tensor, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        up = bicubic_up(decoded, size)
        return {"up": up, **self.reccnn(up)}

    def forward(self, x: torch.Tensor, channel: Callable[[torch.Tensor], torch.Tensor]) -> dict:
        """End to end: ``channel`` maps the compact image to what the decoder sees (codec in the loop)."""
        compressed = self.compress(x)
        decoded = channel(compressed["compact"])
        return {**compressed, "decoded": decoded, **self.reconstruct(decoded, tuple(x.shape[-2:]))}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {"comcnn": list(self.comcnn.parameters()), "reccnn": list(self.reccnn.parameters())}
        assert_disjoint(groups)
        return groups


def assert_disjoint(groups: dict[str, list[nn.Parameter]]) -> None:
    seen: dict[int, str] = {}
    for name, params in groups.items():
        for param in params:
            if id(param) in seen:
                raise AssertionError(f"parameter shared by groups {seen[id(param)]!r} and {name!r}")
            seen[id(param)] = name


MODELS: dict[str, Callable[[ModelConfig], nn.Module]] = {}


def register_model(name: str):
    def decorate(builder: Callable[[ModelConfig], nn.Module]):
        MODELS[name] = builder
        return builder

    return decorate


@register_model("shrink")
def build_shrink(config: ModelConfig) -> ShrinkModel:
    return ShrinkModel(config)


def build_model(config: ModelConfig) -> ShrinkModel:
    if config.name not in MODELS:
        raise ValueError(f"unknown model {config.name!r}; registered: {sorted(MODELS)}")
    return MODELS[config.name](config)
