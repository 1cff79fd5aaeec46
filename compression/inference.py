"""The decoder's RecCNN run for speed on the CPU: what ``model.reconstruct`` computes, to float rounding.

:func:`decode_plan` turns a model's RecCNN into a function from a decoded compact tile to its reconstruction
as 1xHxWx3 floats (``x_hat`` in the channels-last layout, so 8-bit rounding writes HxWx3 pixels without a
transpose). Every plan runs under ``torch.inference_mode`` on channels-last tensors (oneDNN's native layout:
no reorder around each convolution). Two kinds, chosen per model:

- **fused** (``plain`` and ``residual`` families with ReLU, no channel attention, on a CPU with oneDNN): the
  body and head as oneDNN convolutions with the ReLU fused into each, a residual block's ``res_scale``
  folded into its second convolution's weights and its skip added by that convolution in place, an
  eval-mode BatchNorm folded into the convolution before it; the pixel shuffle and the bicubic skip are
  added in the channels-last layout;
- **eager** (any other RecCNN, or where the fused operators are missing): the model's own forward on
  channels-last inputs.

Both compute in float32 and differ from ``model.reconstruct`` only in summation order and the folded
constants, far below 1/255 (``tests/test_fast_decode.py`` holds every 8-bit pixel within one level of the
reference on a random-weight model and a Kodak-sized image); the result is the same on every run. A plan is
built once per model and rebuilt when a parameter changes (each tensor's in-place version counter),
so a model that goes on training or loads new weights is never decoded with stale ones. Models on another
device, or in training mode, get no plan (:func:`decode_plan` returns None) and decode as before.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .models import (
    PlainRecCNN,
    Quality,
    RecCNN,
    ResidualBlock,
    ResidualRecCNN,
    quality_plane,
)
from .resample import bicubic_up

# decoded 1x3xhxw tile, full-resolution size of its upscale, quality -> x_hat as 1xHxWx3 (channels last)
DecodePlan = Callable[[torch.Tensor, tuple[int, int], "Quality | None"], torch.Tensor]

CHANNELS_LAST = torch.channels_last


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=CHANNELS_LAST)


def as_hwc(x: torch.Tensor) -> torch.Tensor:
    """A 1xCxHxW tensor as 1xHxWxC (a view when ``x`` is channels last)."""
    return x.permute(0, 2, 3, 1)


def body_input(source: torch.Tensor, quality_input: bool, quality: Quality | None) -> torch.Tensor:
    """What ``RecCNN.forward`` feeds its body: ``source`` minus 0.5, with the quality plane, channels last."""
    channels = 3 + int(quality_input)
    out = torch.empty((source.shape[0], channels, *source.shape[-2:]), memory_format=CHANNELS_LAST)
    torch.sub(source, 0.5, out=out[:, :3])
    if quality_input:
        out[:, 3:].copy_(quality_plane(quality, out[:, :1]))
    return out


def shuffled_hwc(residual: torch.Tensor, factor: int) -> torch.Tensor:
    """``PixelShuffle(factor)`` of a channels-last 1x(3·f²)xhxw residual, as a contiguous 1x(h·f)x(w·f)x3."""
    if factor == 1:
        return as_hwc(residual).contiguous()
    n, _, height, width = residual.shape
    # PixelShuffle: out[c, y·f + i, x·f + j] = in[c·f² + i·f + j, y, x]
    hwc = as_hwc(residual).reshape(n, height, width, 3, factor, factor)
    return hwc.permute(0, 1, 4, 2, 5, 3).reshape(n, height * factor, width * factor, 3)


# ---------------------------------------------------------------- the fused plan


@dataclass(frozen=True)
class FusedConv:
    """One convolution for ``torch.ops.mkldnn._convolution_pointwise``: weight, bias, padding, activation."""

    weight: torch.Tensor
    bias: torch.Tensor
    padding: int
    relu: bool

    @staticmethod
    def of(conv: nn.Conv2d, relu: bool, scale: float = 1.0, norm: nn.BatchNorm2d | None = None) -> FusedConv:
        weight = conv.weight.detach().float() * scale
        bias = conv.bias.detach().float() * scale if conv.bias is not None else torch.zeros(weight.shape[0])
        if norm is not None:  # eval-mode BatchNorm: a per-channel affine map after the convolution
            factor = norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)
            bias = (bias - norm.running_mean) * factor + norm.bias.detach()
            weight = weight * factor[:, None, None, None]
        return FusedConv(weight.contiguous(), bias.contiguous(), conv.padding[0], relu)

    def _args(self) -> tuple:
        return (self.weight, self.bias, [self.padding] * 2, [1, 1], [1, 1], 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        activation = "relu" if self.relu else "none"
        return torch.ops.mkldnn._convolution_pointwise(x, *self._args(), activation, [], "")

    def add_to(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``skip += conv(x)`` in place (the residual block's skip), no activation."""
        return torch.ops.mkldnn._convolution_pointwise_.binary(
            skip, x, *self._args(), "add", 1.0, None, [], None
        )


def _plain_conv(conv: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and conv.kernel_size[0] == conv.kernel_size[1]
        and conv.padding == ((conv.kernel_size[0] - 1) // 2,) * 2
    )


def _fused_layers(reccnn: RecCNN) -> list[tuple[str, FusedConv, ...]] | None:
    """The RecCNN body + head as ("conv", c) and ("block", c1, c2) steps, or None when it has a layer the
    fused plan does not know (another activation, channel attention, a strided or dilated conv...)."""
    if reccnn.cfg.activation != "relu" or not _plain_conv(reccnn.head):
        return None
    if type(reccnn) is PlainRecCNN:
        steps, layers = [], list(reccnn.body)
        while layers:
            conv = layers.pop(0)
            norm = layers.pop(0) if layers and isinstance(layers[0], nn.BatchNorm2d) else None
            if norm is not None and (norm.running_var is None or not norm.affine):
                return None
            if not _plain_conv(conv) or not layers or not isinstance(layers.pop(0), nn.ReLU):
                return None
            while layers and isinstance(layers[0], nn.Dropout2d):  # the identity in eval mode
                layers.pop(0)
            steps.append(("conv", FusedConv.of(conv, relu=True, norm=norm)))
    elif type(reccnn) is ResidualRecCNN:
        first, relu, *blocks = reccnn.body
        if not (_plain_conv(first) and isinstance(relu, nn.ReLU)):
            return None
        steps = [("conv", FusedConv.of(first, relu=True))]
        for block in blocks:
            if not isinstance(block, ResidualBlock) or len(block.body) != 3:
                return None
            conv1, act, conv2 = block.body
            if not (_plain_conv(conv1) and _plain_conv(conv2) and isinstance(act, nn.ReLU)):
                return None
            second = FusedConv.of(conv2, relu=False, scale=block.res_scale)
            steps.append(("block", FusedConv.of(conv1, relu=True), second))
    else:
        return None
    return [*steps, ("conv", FusedConv.of(reccnn.head, relu=False))]


def fused_plan(reccnn: RecCNN) -> DecodePlan | None:
    operators = ("_convolution_pointwise", "_convolution_pointwise_")
    if not torch.backends.mkldnn.is_available() or not all(hasattr(torch.ops.mkldnn, op) for op in operators):
        return None
    steps = _fused_layers(reccnn)
    if steps is None:
        return None
    shuffle, quality_input = reccnn.shuffle, reccnn.cfg.quality_input  # no reference to the module
    factor = reccnn.ratio if shuffle else 1

    def run(decoded: torch.Tensor, size: tuple[int, int], quality: Quality | None) -> torch.Tensor:
        with torch.inference_mode():
            decoded = channels_last(decoded.float())
            up = bicubic_up(decoded, size)
            x = body_input(decoded if shuffle else up, quality_input, quality)
            for kind, conv, *rest in steps:
                if kind == "conv":
                    x = conv(x)
                else:
                    x = rest[0].add_to(x, conv(x))
            residual = shuffled_hwc(x, factor)
            if residual.shape[1:3] != up.shape[-2:]:
                raise ValueError(f"residual {tuple(residual.shape[1:3])} != upscale {tuple(up.shape[-2:])}")
            return residual.add_(as_hwc(channels_last(up)))

    return run


# ---------------------------------------------------------------- the eager plan


def eager_plan(reccnn: RecCNN) -> DecodePlan:
    module = weakref.ref(reccnn)  # the plan cache holds plans weakly keyed by the module: no cycle back to it

    def run(decoded: torch.Tensor, size: tuple[int, int], quality: Quality | None) -> torch.Tensor:
        reccnn = module()
        with torch.inference_mode():
            decoded = channels_last(decoded.float())
            up = bicubic_up(decoded, size)
            return as_hwc(channels_last(reccnn(up, decoded, quality)["x_hat"]))

    return run


# ---------------------------------------------------------------- plans, cached per model

_PLANS: weakref.WeakKeyDictionary[RecCNN, tuple[tuple, DecodePlan]] = weakref.WeakKeyDictionary()


def _fingerprint(reccnn: RecCNN) -> tuple:
    tensors = [*reccnn.parameters(), *reccnn.buffers()]
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)


def decode_plan(reccnn: RecCNN, fused: bool = True) -> DecodePlan | None:
    """The fast decoder of a CPU RecCNN in eval mode (fused where it can be, else eager), None otherwise."""
    tensors = [*reccnn.parameters(), *reccnn.buffers()]
    if reccnn.training or any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return None
    key = (fused, _fingerprint(reccnn))
    cached = _PLANS.get(reccnn)
    if cached is not None and cached[0] == key:
        return cached[1]
    plan = (fused_plan(reccnn) if fused else None) or eager_plan(reccnn)
    _PLANS[reccnn] = (key, plan)
    return plan


def fused_convolutions(reccnn: RecCNN) -> bool:
    """Whether :func:`decode_plan` fuses this RecCNN (for reports and tests)."""
    return fused_plan(reccnn) is not None
