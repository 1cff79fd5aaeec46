"""What a model costs to run: multiply-accumulates (MACs) per output pixel and parameters, per side.

The decoder is what ``model.reconstruct(decoded, size)`` runs on a decoded compact image (for ShrinkModel:
bicubic upscaling, then the RecCNN); the encoder is what ``model.compress(x)`` runs. Both are counted by
running them once on a dummy image of :data:`REFERENCE_SIZE` under ``torch.utils.flop_counter.
FlopCounterMode`` and dividing by the full-resolution output's pixels, so a layer that runs at the compact
resolution counts 1/ratio² as much per output pixel as one at full resolution. MACs = FLOPs / 2: the
counter counts 2 FLOPs per multiply-accumulate of every convolution, matrix product and attention it knows.

**Not counted**: what FlopCounterMode has no formula for: interpolation (the bicubic upscaling around which
the RecCNN is a residual, and the ComCNN's bicubic downscaling: fixed filters, the same for every model at a
ratio, and what the downscale + JPEG + bicubic baseline costs as well), biases, normalisation, activations,
pooling, pixel shuffles, residual additions and other elementwise arithmetic (such as a CAR ComCNN applying
its predicted kernels). So the figure is the learned layers' cost, which is what a search over model sizes
changes.

Parameters are those of ``model.parameter_groups()``: ``"reccnn"`` is the decoder, ``"comcnn"`` the encoder
(buffers such as BatchNorm running statistics are not parameters). The count works for any registered model
family that has ``compress``, ``reconstruct`` and ``parameter_groups``; :func:`config_cost` builds the model
on PyTorch's meta device (shapes only: no memory, no arithmetic), falling back to the CPU for a model that
cannot be built or run there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import ModelConfig
from .models import build_model

# Divisible by every ratio in ModelConfig (1..4) and by 16, so the compact image has whole pixels and the
# per-pixel figures of convolutional nets are those of any size (a global-pooling branch, e.g. channel
# attention, costs a constant per image: its share per pixel is that of a 240x240 image).
REFERENCE_SIZE = (240, 240)


@dataclass(frozen=True)
class ModelCost(Mapping):
    """The four figures of :data:`COST_KEYS`, as attributes or as a read-only mapping (``dict(cost)``)."""

    decoder_macs_per_pixel: float
    decoder_params: int
    encoder_macs_per_pixel: float
    encoder_params: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def __getitem__(self, key: str) -> float | int:
        if key not in COST_KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(COST_KEYS)

    def __len__(self) -> int:
        return len(COST_KEYS)


COST_KEYS = tuple(field.name for field in fields(ModelCost))


def model_cost(model: nn.Module, size: tuple[int, int] = REFERENCE_SIZE) -> ModelCost:
    """Count ``model`` (on its own device, in eval mode and without gradients; its mode is restored).

    The decoder runs on the encoder's own compact output of a mid-grey ``size`` image, clamped to [0, 1] as a
    decoded file would be; MACs are divided by ``size[0] * size[1]``, the reconstruction's pixels.
    """
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    height, width = size
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = torch.full((1, 3, height, width), 0.5, device=device)
            with FlopCounterMode(display=False) as encoder:
                compact = model.compress(x)["compact"]
            decoded = compact.clamp(0.0, 1.0)
            with FlopCounterMode(display=False) as decoder:
                model.reconstruct(decoded, (height, width), quality=50)
    finally:
        model.train(was_training)
    pixels = height * width
    groups = model.parameter_groups()
    return ModelCost(
        decoder_macs_per_pixel=decoder.get_total_flops() / 2 / pixels,
        decoder_params=sum(p.numel() for p in groups.get("reccnn", [])),
        encoder_macs_per_pixel=encoder.get_total_flops() / 2 / pixels,
        encoder_params=sum(p.numel() for p in groups.get("comcnn", [])),
    )


def config_cost(config: ModelConfig, size: tuple[int, int] = REFERENCE_SIZE) -> ModelCost:
    """The cost of the model ``config`` builds, without training or keeping it.

    Built on the meta device when the model allows it (instant, even for large nets), else on the CPU. The
    CPU random state is saved and restored around it, so counting leaves a seeded run's draws unchanged.
    """
    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                model = build_model(config)
            return model_cost(model, size)
        except (NotImplementedError, RuntimeError):  # an op without a meta kernel
            return model_cost(build_model(config), size)


def format_cost(cost: ModelCost) -> str:
    """One line: ``decoder 1,008 MACs/px, 1,035 params; encoder 414 MACs/px, 1,035 params``."""
    return (
        f"decoder {cost.decoder_macs_per_pixel:,.0f} MACs/px, {cost.decoder_params:,} params; "
        f"encoder {cost.encoder_macs_per_pixel:,.0f} MACs/px, {cost.encoder_params:,} params"
    )
