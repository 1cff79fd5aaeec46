"""ComCNN and RecCNN (Jiang et al. 2017), each built as a residual around bicubic resampling.

An untrained model is exactly downscale + codec + bicubic: both output layers start at zero, so a search
starts from the baseline and can only be judged on what training adds. Models return dicts with fixed keys.

Each net comes in families, registered by name (:data:`COMCNN_FAMILIES`, :data:`RECCNN_FAMILIES`) and chosen
by ``model.comcnn.family`` / ``model.reccnn.family``; every family keeps the zero start, the dict keys and the
``body`` / ``head`` layout (``head``: the zero-initialised output conv). Each net says how many compact pixels
of context a tile needs (``tile_margin``), which :mod:`tiling` uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .config import ComCNNConfig, ConvStackConfig, ModelConfig, RecCNNConfig
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
    for layer in module.modules():
        if isinstance(layer, ChannelAttention):
            layer.reset_parameters()


Quality = int | Sequence[int] | torch.Tensor  # the codec quality of each image in a batch (or of all)


def quality_plane(quality: Quality | None, like: torch.Tensor) -> torch.Tensor:
    """Bx1xHxW planes holding ``quality / 100 - 0.5`` (one value per image, or one for all), on ``like``'s
    grid, dtype and device: the RecCNN's conditioning input."""
    if quality is None:
        raise ValueError("model.reccnn.quality_input = true: the RecCNN needs each image's codec quality")
    values = torch.as_tensor(quality, dtype=torch.float32).to(like.device, like.dtype).reshape(-1, 1, 1, 1)
    if values.shape[0] not in (1, like.shape[0]):
        raise ValueError(f"{values.shape[0]} qualities for a batch of {like.shape[0]}")
    return (values / 100.0 - 0.5).expand(like.shape[0], 1, *like.shape[-2:])


def _zero_conv(in_ch: int, out_ch: int = 3) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _downsampling_kernel(ratio: int) -> int:
    # ratio 2: 3x3/2 with padding 1 (the paper's conv2); 3 and 4: non-overlapping ratio x ratio patches.
    return 3 if ratio <= 2 else ratio


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2)


class ChannelAttention(nn.Module):
    """RCAN's channel attention (squeeze-excite): ``x * sigmoid(W2 relu(W1 mean_hw(x)))``.

    It pools over the whole image, so a net that has it is not local: :mod:`tiling` runs it untiled (as a
    GroupNorm net), and it sees crops in training but whole images in evaluation.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.squeeze = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def reset_parameters(self) -> None:
        # Hidden units start alive (small weights, bias 0.1) and the gate near 0.5: with He init and bias 0,
        # a few hidden ReLUs can all start dead and never get a gradient again.
        first, second = self.squeeze[1], self.squeeze[3]
        nn.init.normal_(first.weight, std=0.01)
        nn.init.constant_(first.bias, 0.1)
        nn.init.kaiming_normal_(second.weight, nonlinearity="relu")
        nn.init.zeros_(second.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.squeeze(x)


# ---------------------------------------------------------------- ComCNN families

COMCNN_FAMILIES: dict[str, type[ComCNN]] = {}
RECCNN_FAMILIES: dict[str, type[RecCNN]] = {}


def _registrar(registry: dict[str, type]):
    """``@register(name)`` for one family registry: records the class and its ``family`` name."""

    def register(name: str):
        def decorate(cls):
            cls.family = name
            registry[name] = cls
            return cls

        return decorate

    return register


register_comcnn = _registrar(COMCNN_FAMILIES)
register_reccnn = _registrar(RECCNN_FAMILIES)


@register_comcnn("residual")
class ComCNN(nn.Module):
    """x -> compact image at 1/ratio: ``bicubic_down(x) + correction(x)``, correction starting at zero.

    The body is the paper's: a full-resolution conv (depth >= 3), a strided conv down to the compact grid,
    then convs there; the zero-initialised ``head`` turns its features into the correction (:meth:`correct`).
    """

    family = "residual"

    def __init__(self, cfg: ComCNNConfig, ratio: int):
        super().__init__()
        self.cfg, self.ratio = cfg, ratio
        layers: list[nn.Module] = []
        if cfg.depth >= 3:  # the paper: a full-resolution conv before the strided one
            layers += _conv_block(cfg, 3, norm=False)
        first_in = cfg.width if cfg.depth >= 3 else 3
        layers += _conv_block(cfg, first_in, kernel=_downsampling_kernel(ratio), stride=ratio)
        for _ in range(cfg.depth - 3):
            layers += _conv_block(cfg, cfg.width)
        self.body = nn.Sequential(*layers)
        _he_init(self.body)
        self.head = _zero_conv(cfg.width, self.head_channels(cfg, ratio))

    @classmethod
    def head_channels(cls, cfg: ComCNNConfig, ratio: int) -> int:
        return 3

    def correct(self, x: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        """The correction added to the bicubic downscale, from the head's output."""
        return head

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        base = bicubic_down(x, self.ratio)
        correction = self.correct(x, self.head(self.body(x - 0.5)))
        return {"compact": base + correction, "base": base}

    @classmethod
    def margin(cls, cfg: ComCNNConfig, ratio: int) -> int:
        """Compact pixels of context a tile needs: the body reaches at most ``depth`` compact pixels (one 3x3
        conv per layer; the full-resolution and strided convs together at most 2 input pixels), the
        antialiased bicubic downscale 2; +1 to spare."""
        return cfg.depth + 3

    def tile_margin(self) -> int:
        return self.margin(self.cfg, self.ratio)


@register_comcnn("car")
class CarComCNN(ComCNN):
    """A content-adaptive resampler after CAR (Sun & Chen 2020), starting exactly at the bicubic downscale.

    Construction. Let ``r = ratio``, ``s = car_support`` (odd) and ``k = s·r``. The residual ComCNN's body
    and its zero-initialised 3x3 ``head`` (``k²`` channels) predict, for every compact pixel ``(i, j)``, a
    ``k x k`` kernel ``D_ij``; each is made to sum to zero (``D - mean(D)``). It is applied to the window
    of the full-resolution image centred on the compact pixel's ``r x r`` block (rows ``r·i - r(s-1)/2`` to
    ``r·i + r - 1 + r(s-1)/2``; the image replicate-padded by ``r(s-1)/2``), shared by the three channels::

        compact_ij = bicubic_down(x)_ij + sum_{u,v} D_ij[u, v] · x[r·i - r(s-1)/2 + u, r·j - r(s-1)/2 + v]

    So the kernel applied at each pixel is the bicubic (antialias) kernel plus the predicted ``D_ij``, which
    starts at exactly zero (zero head: the untrained net *is* ``bicubic_down``, bit for bit), and, summing to
    zero, keeps the bicubic kernel's unit gain: a flat image stays flat whatever the net predicts.
    """

    @classmethod
    def head_channels(cls, cfg: ComCNNConfig, ratio: int) -> int:
        return (cfg.car_support * ratio) ** 2

    def correct(self, x: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        r, window = self.ratio, self.cfg.car_support * self.ratio
        pad = r * (self.cfg.car_support - 1) // 2
        kernels = head - head.mean(dim=1, keepdim=True)  # n x k² x h x w, each kernel summing to zero
        padded = F.pad(x, (pad, pad, pad, pad), mode="replicate") if pad else x
        n, _, h, w = kernels.shape
        patches = F.unfold(padded, window, stride=r).view(n, 3, window * window, h, w)
        return (patches * kernels[:, None]).sum(dim=2)

    @classmethod
    def margin(cls, cfg: ComCNNConfig, ratio: int) -> int:
        """The residual ComCNN's margin plus the kernel window's half-width, (s - 1) / 2 compact pixels."""
        return super().margin(cfg, ratio) + (cfg.car_support - 1) // 2


def build_comcnn(cfg: ComCNNConfig, ratio: int) -> ComCNN:
    return COMCNN_FAMILIES[cfg.family](cfg, ratio)


# ---------------------------------------------------------------- RecCNN families


class RecCNN(nn.Module):
    """Upscaled decoded image -> ``up + residual``, the residual's last layer (``head``) starting at zero.

    A family builds ``body``: 3 channels in, ``width`` out, at its input's resolution. ``upsample =
    "bicubic"``: the body runs on the bicubic upscale ``up`` (full resolution). ``"pixelshuffle"`` (ratio
    > 1): it runs on the decoded compact image, the head predicts ``3·ratio²`` channels there and a
    ``PixelShuffle(ratio)`` makes them the full-resolution residual, still added to ``up`` (the bicubic
    skip keeps the zero start); at ratio 1 both modes are the same net.

    ``quality_input``: the body also gets a constant plane holding each image's codec quality (``q/100 -
    0.5``, :func:`quality_plane`), so one model can filter a q5 file harder than a q90 one; the decoder
    knows the quality (the shrink file's header stores it).
    """

    family = "plain"

    def __init__(self, cfg: RecCNNConfig, ratio: int = 1):
        super().__init__()
        self.cfg, self.ratio = cfg, ratio
        self.shuffle = cfg.upsample == "pixelshuffle" and ratio > 1
        factor = ratio if self.shuffle else 1
        self.body = self.build_body(cfg, self.input_channels(cfg))
        _he_init(self.body)
        self.head = _zero_conv(cfg.width, 3 * factor**2)
        self.pixel_shuffle = nn.PixelShuffle(factor) if factor > 1 else nn.Identity()

    @staticmethod
    def input_channels(cfg: RecCNNConfig) -> int:
        return 3 + int(cfg.quality_input)

    def build_body(self, cfg: RecCNNConfig, in_ch: int) -> nn.Module:
        raise NotImplementedError

    def forward(
        self, up: torch.Tensor, decoded: torch.Tensor | None = None, quality: Quality | None = None
    ) -> dict[str, torch.Tensor]:
        source = up
        if self.shuffle:
            if decoded is None:
                raise ValueError("upsample = 'pixelshuffle': the RecCNN needs the decoded compact image")
            source = decoded
        source = source - 0.5
        if self.cfg.quality_input:
            source = torch.cat([source, quality_plane(quality, source)], dim=1)
        residual = self.pixel_shuffle(self.head(self.body(source)))
        if residual.shape[-2:] != up.shape[-2:]:
            raise ValueError(
                f"pixel-shuffle residual {tuple(residual.shape[-2:])} != upscale {tuple(up.shape[-2:])}: "
                f"the size must be ratio x the decoded size"
            )
        return {"residual": residual, "x_hat": up + residual}

    @classmethod
    def body_reach(cls, cfg: RecCNNConfig) -> int:
        """How far (in pixels of its input grid, each side) one of the body's outputs reaches."""
        raise NotImplementedError

    @classmethod
    def alignment(cls, cfg: RecCNNConfig) -> int:
        """Tiles must start at multiples of this on the body's input grid (strided bodies)."""
        return 1

    @classmethod
    def margin(cls, cfg: RecCNNConfig, ratio: int) -> int:
        """Compact pixels of context a tile needs: the body's reach plus the 3x3 head, in compact pixels
        (divided by the ratio when the body runs at full resolution), plus 2 for the bicubic upscale's taps
        and 1 to spare, rounded up to the body's alignment."""
        reach = cls.body_reach(cfg) + 1
        shuffle = cfg.upsample == "pixelshuffle" and ratio > 1
        compact = reach if shuffle else math.ceil(reach / ratio)
        return _round_up(compact + 3, cls.alignment(cfg))

    def tile_margin(self) -> int:
        return self.margin(self.cfg, self.ratio)


@register_reccnn("plain")
class PlainRecCNN(RecCNN):
    """The paper's stack: ``depth - 1`` convs (``kernel``, ``norm``, ``activation``, ``dropout``) + head."""

    def build_body(self, cfg: RecCNNConfig, in_ch: int) -> nn.Module:
        layers = _conv_block(cfg, in_ch, kernel=cfg.kernel, norm=False)
        for _ in range(cfg.depth - 2):
            layers += _conv_block(cfg, cfg.width, kernel=cfg.kernel)
        return nn.Sequential(*layers)

    @classmethod
    def body_reach(cls, cfg: RecCNNConfig) -> int:
        return (cfg.depth - 1) * (cfg.kernel // 2)


class ResidualBlock(nn.Module):
    """EDSR's block: ``x + res_scale · conv(act(conv(x)))``, no norm; RCAN's channel attention optional."""

    def __init__(self, width: int, kernel: int, activation: str, res_scale: float, attention: bool):
        super().__init__()
        layers = [_conv(width, width, kernel), ACTIVATIONS[activation](), _conv(width, width, kernel)]
        if attention:
            layers.append(ChannelAttention(width))
        self.body = nn.Sequential(*layers)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


@register_reccnn("residual")
class ResidualRecCNN(RecCNN):
    """EDSR-style: an input conv + activation, ``(depth - 2) // 2`` residual blocks, the head. ``depth``
    counts conv layers as for ``plain`` (an odd depth rounds down); ``norm`` and ``dropout`` are unused."""

    @staticmethod
    def blocks(cfg: RecCNNConfig) -> int:
        return (cfg.depth - 2) // 2

    def build_body(self, cfg: RecCNNConfig, in_ch: int) -> nn.Module:
        layers: list[nn.Module] = [_conv(in_ch, cfg.width, cfg.kernel), ACTIVATIONS[cfg.activation]()]
        layers += [
            ResidualBlock(cfg.width, cfg.kernel, cfg.activation, cfg.res_scale, cfg.attention)
            for _ in range(self.blocks(cfg))
        ]
        return nn.Sequential(*layers)

    @classmethod
    def body_reach(cls, cfg: RecCNNConfig) -> int:
        return (1 + 2 * cls.blocks(cfg)) * (cfg.kernel // 2)


class UNetBody(nn.Module):
    """``in_ch`` -> ``width`` channels through ``levels`` stride-2 levels and back, at the input's resolution.

    Stage ``l`` has ``width·2^l`` channels (capped at 512) and two convs: encoder stage 0 two ``kernel``
    convs; encoder stage ``l >= 1`` a 3x3 stride-2 conv then a ``kernel`` conv; decoder stage ``l`` a 2x2
    stride-2 transposed conv from stage ``l + 1``, concatenated with encoder stage ``l``'s output, then two
    ``kernel`` convs. Optional channel attention ends every stage. The input is replicate-padded at the
    bottom/right to a multiple of ``2^levels`` and the output cropped back.
    """

    def __init__(self, cfg: RecCNNConfig, in_ch: int = 3):
        super().__init__()
        self.levels = cfg.levels
        widths = [min(512, cfg.width * 2**level) for level in range(cfg.levels + 1)]
        act, k = cfg.activation, cfg.kernel

        def stage(first: nn.Module, in_ch: int, out_ch: int) -> nn.Sequential:
            layers = [first, ACTIVATIONS[act](), _conv(out_ch, out_ch, k), ACTIVATIONS[act]()]
            if cfg.attention:
                layers.append(ChannelAttention(out_ch))
            return nn.Sequential(*layers)

        self.enc = nn.ModuleList([stage(_conv(in_ch, widths[0], k), in_ch, widths[0])])
        self.enc.extend(
            stage(_conv(widths[level - 1], widths[level], 3, stride=2), widths[level - 1], widths[level])
            for level in range(1, cfg.levels + 1)
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2) for level in range(cfg.levels)
        )
        self.dec = nn.ModuleList(
            stage(_conv(2 * widths[level], widths[level], k), 2 * widths[level], widths[level])
            for level in range(cfg.levels)
        )
        for up in self.up:  # each output pixel sees in_ch weights: He init for that fan-in
            nn.init.normal_(up.weight, std=math.sqrt(2.0 / up.in_channels))
            nn.init.zeros_(up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        multiple = 2**self.levels
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        skips = []
        for stage in self.enc:
            x = stage(x)
            skips.append(x)
        for level in reversed(range(self.levels)):
            x = self.dec[level](torch.cat([self.up[level](x), skips[level]], dim=1))
        return x[..., :height, :width]

    @staticmethod
    def reach(levels: int, kernel: int) -> int:
        """The exact one-sided reach: dependency intervals walked back through every path, for each
        position modulo ``2^levels`` (the strides make it depend on that), the worst kept."""
        r = kernel // 2

        def encoder(level: int, lo: int, hi: int) -> tuple[int, int]:
            if level == 0:
                return lo - 2 * r, hi + 2 * r
            lo, hi = lo - r, hi + r  # the stage's second conv
            return encoder(level - 1, 2 * lo - 1, 2 * hi + 1)  # the 3x3 stride-2 conv

        def decoder(level: int, lo: int, hi: int) -> tuple[int, int]:
            if level == levels:
                return encoder(level, lo, hi)
            lo, hi = lo - 2 * r, hi + 2 * r
            skip, below = encoder(level, lo, hi), decoder(level + 1, lo // 2, hi // 2)
            return min(skip[0], below[0]), max(skip[1], below[1])

        spans = [(p, *decoder(0, p, p)) for p in range(2**levels)]
        return max(max(p - lo, hi - p) for p, lo, hi in spans)


@register_reccnn("unet")
class UNetRecCNN(RecCNN):
    """A U-Net body (:class:`UNetBody`): a receptive field over several of JPEG's 8x8 compact blocks for the
    cost of four full-resolution convs (3x3 convs: ±8 / ±20 / ±44 pixels of the body's input at 1 / 2 / 3
    levels; with ``pixelshuffle`` those are compact pixels). ``depth``, ``norm``, ``dropout`` and
    ``res_scale`` are unused."""

    def build_body(self, cfg: RecCNNConfig, in_ch: int) -> nn.Module:
        return UNetBody(cfg, in_ch)

    @classmethod
    def body_reach(cls, cfg: RecCNNConfig) -> int:
        return UNetBody.reach(cfg.levels, cfg.kernel)

    @classmethod
    def alignment(cls, cfg: RecCNNConfig) -> int:
        return 2**cfg.levels


def build_reccnn(cfg: RecCNNConfig, ratio: int) -> RecCNN:
    return RECCNN_FAMILIES[cfg.family](cfg, ratio)


class ShrinkModel(nn.Module):
    """ComCNN + RecCNN. The codec sits between them and is supplied by the caller (see ``channel.py``)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.ratio = config.ratio
        self.comcnn = build_comcnn(config.comcnn, config.ratio)
        self.reccnn = build_reccnn(config.reccnn, config.ratio)

    def compress(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.comcnn(x)

    def reconstruct(
        self, decoded: torch.Tensor, size: tuple[int, int], quality: Quality | None = None
    ) -> dict[str, torch.Tensor]:
        """The decoder: bicubic upscale to ``size`` + the RecCNN's residual. ``quality`` (one per image, or
        one for the batch) is the codec quality the compact image was stored at; only a RecCNN with
        ``quality_input`` reads it, and it then must be given."""
        up = bicubic_up(decoded, size)
        return {"up": up, **self.reccnn(up, decoded, quality)}

    def forward(
        self,
        x: torch.Tensor,
        channel: Callable[[torch.Tensor], torch.Tensor],
        quality: Quality | None = None,
    ) -> dict:
        """End to end: ``channel`` maps the compact image to what the decoder sees (codec in the loop)."""
        compressed = self.compress(x)
        decoded = channel(compressed["compact"])
        size = tuple(x.shape[-2:])
        return {**compressed, "decoded": decoded, **self.reconstruct(decoded, size, quality)}

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


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients: the other net's turn passes gradients through it only."""
    was_training = module.training
    flags = [p.requires_grad for p in module.parameters()]
    module.eval()
    module.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in zip(module.parameters(), flags, strict=True):
            param.requires_grad_(flag)
        module.train(was_training)


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
