"""One typed configuration for a training run: TOML preset -> TrainConfig -> trainer.

Every knob has a default; unknown keys are rejected (``extra="forbid"``) so a typo in a preset or a
``--set`` override fails with the field path instead of being silently ignored.
"""

from __future__ import annotations

import copy
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .qtables import BaseTables, check_base_tables

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

Norm = Literal["none", "batch", "group"]
Activation = Literal["relu", "leaky_relu", "gelu", "silu"]
GradientMode = Literal["identity", "straight-through", "proxy"]
ScheduleName = Literal["constant", "cosine", "step"]
CodecName = Literal["jpeg", "mozjpeg", "jpegli", "webp", "avif"]
# keys of qtables.TABLE_SETS (mozjpeg's nine built-in sets, in its index order)
TableSetName = Literal[
    "annex-k", "flat", "msssim-kodak", "imagemagick", "psnr-hvs-m", "klein", "watson", "ahumada", "peterson"
]
Subsampling = Literal["4:4:4", "4:2:2", "4:2:0"]
ComLoss = Literal["mixture", "gain"]
ComFamily = Literal["residual", "car"]  # keys of models.COMCNN_FAMILIES
RecFamily = Literal["plain", "residual", "unet"]  # keys of models.RECCNN_FAMILIES
Upsample = Literal["bicubic", "pixelshuffle"]


class Strict(BaseModel):
    # allow_inf_nan=False: "inf" passes ge=0 and would train on a NaN loss
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ConvStackConfig(Strict):
    depth: int = Field(3, ge=2, le=64, description="number of conv layers, including the output layer")
    width: int = Field(64, ge=4, le=512)
    norm: Norm = "none"
    activation: Activation = "relu"
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="channel dropout (Dropout2d) after each hidden layer"
    )


class ComCNNConfig(ConvStackConfig):
    """The ComCNN (``models.COMCNN_FAMILIES``). Every family starts exactly at the bicubic downscale.

    - ``residual`` (default, the paper's net): ``bicubic_down(x)`` + a conv stack's correction.
    - ``car``: a content-adaptive resampler (after CAR, Sun & Chen 2020): the same conv stack predicts, per
      compact pixel, a ``car_support·ratio`` square kernel applied to the full-resolution image on top of the
      bicubic downscale. ``car_support`` applies to ``car`` only.
    """

    family: ComFamily = Field("residual", description="residual | car (see models.COMCNN_FAMILIES)")
    car_support: Literal[1, 3, 5, 7] = Field(
        3,
        description="car only: side of the per-pixel resampling kernel in compact pixels (odd); it spans "
        "car_support*ratio full-resolution pixels centred on the compact pixel",
    )


class RecCNNConfig(ConvStackConfig):
    """The RecCNN (``models.RECCNN_FAMILIES``). Every family starts exactly at the bicubic upscale.

    - ``plain`` (default, the paper's net): ``depth`` convs in a row, with ``norm`` and ``dropout``.
    - ``residual``: EDSR-style: an input conv, ``(depth - 2) // 2`` residual blocks (conv-act-conv, no norm,
      scaled by ``res_scale``, optionally with RCAN channel ``attention``), the output conv; ``depth`` counts
      conv layers as for ``plain``, so one ``depth`` range costs alike in both.
    - ``unet``: an encoder-decoder over ``levels`` stride-2 levels, channels doubling per level from
      ``width``, two convs per stage, concatenated skips, transposed-conv ups; ignores ``depth``.

    ``norm`` and ``dropout`` apply to ``plain`` only, ``res_scale`` to ``residual``, ``levels`` to ``unet``,
    ``attention`` to ``residual`` and ``unet``; ``kernel``, ``upsample`` and ``quality_input`` to every
    family.
    """

    depth: int = Field(20, ge=2, le=64)
    norm: Norm = "batch"
    family: RecFamily = Field("plain", description="plain | residual | unet (see models.RECCNN_FAMILIES)")
    kernel: Literal[3, 5] = Field(3, description="kernel size of the body's convs (the output conv is 3x3)")
    res_scale: float = Field(0.1, gt=0.0, le=1.0, description="residual only: residual-branch scaling")
    levels: int = Field(2, ge=1, le=3, description="unet only: stride-2 levels below full resolution")
    attention: bool = Field(
        False, description="residual / unet: squeeze-excite channel attention per block (pools globally)"
    )
    quality_input: bool = Field(
        False,
        description="condition on the codec quality: a constant q/100 - 0.5 plane joins the body's input "
        "(the decoder reads q from the file), so one model adapts its filtering to the rate",
    )
    upsample: Upsample = Field(
        "bicubic",
        description="bicubic: the net corrects the bicubic upscale at full resolution; pixelshuffle: it runs "
        "on the decoded compact image and a pixel-shuffle head adds its full-resolution residual",
    )


class ModelConfig(Strict):
    name: str = Field("shrink", description="registry name of the model builder")
    ratio: Literal[1, 2, 3, 4] = 2
    comcnn: ComCNNConfig = ComCNNConfig()
    reccnn: RecCNNConfig = RecCNNConfig()


class CodecConfig(Strict):
    name: CodecName = "jpeg"
    quality: int | None = Field(
        None, ge=1, le=100, description="fixed training quality; None samples the range"
    )
    quality_range: tuple[int, int] = (10, 95)
    subsampling: Subsampling = "4:2:0"
    tables: TableSetName | None = Field(
        None,
        description="quantisation table set (jpeg and mozjpeg; scaled by quality as libjpeg does); None: "
        "the codec's own: annex-k for jpeg, imagemagick for mozjpeg",
    )
    base_tables: tuple[tuple[int, ...], tuple[int, ...]] | None = Field(
        None,
        description="explicit base tables instead of a named set (jpeg and mozjpeg): luma, then chroma, 64 "
        "entries each in natural order, scaled by quality like a named set; what learn_tables learns",
    )
    learn_tables: bool = Field(
        False,
        description="learn the base tables (starting from tables or base_tables) on the ComCNN's turns, "
        "through the JPEG proxy with the ComCNN's loss; the real codec writes the rounded tables throughout "
        "and an export holds them as base_tables",
    )
    optimize: bool = True
    webp_method: int = Field(4, ge=0, le=6, description="libwebp effort: 6 = smallest files, slowest")
    avif_speed: int = Field(6, ge=0, le=10, description="libavif encoder speed: 0 = smallest files, slowest")
    threads: int = Field(
        0, ge=0, description="codec thread pool size; 0 = SHRINK_CODEC_THREADS, else the process's cores"
    )

    @model_validator(mode="after")
    def _range_is_ordered(self) -> CodecConfig:
        low, high = self.quality_range
        if not 1 <= low <= high <= 100:
            raise ValueError(f"quality_range must satisfy 1 <= low <= high <= 100, got {self.quality_range}")
        return self

    @model_validator(mode="after")
    def _tables_are_honoured(self) -> CodecConfig:
        for key, value in (("tables", self.tables), ("base_tables", self.base_tables)):
            if value is not None and self.name not in ("jpeg", "mozjpeg"):
                raise ValueError(
                    f"codec.{key} is set, but only jpeg and mozjpeg take a table set ({self.name} chooses "
                    f"its own): leave codec.{key} unset or use codec.name = 'jpeg' or 'mozjpeg'"
                )
        if self.learn_tables and self.name not in ("jpeg", "mozjpeg"):
            raise ValueError(
                f"codec.learn_tables, but only jpeg and mozjpeg take a table set ({self.name} chooses "
                "its own)"
            )
        if self.tables is not None and self.base_tables is not None:
            raise ValueError("give codec.tables (a named set) or codec.base_tables, not both")
        if self.base_tables is not None:
            check_base_tables(self.base_tables)
        return self

    def table_choice(self, default: str) -> str | BaseTables:
        """The tables the codec writes with: the explicit base tables, the named set, or ``default``."""
        return self.base_tables or self.tables or default

    @model_validator(mode="after")
    def _subsampling_is_honoured(self) -> CodecConfig:
        if self.name == "jpegli" and self.subsampling != "4:2:0":  # pyjpegli has no subsampling control
            raise ValueError(
                f"codec.subsampling = {self.subsampling!r}, but jpegli (pyjpegli) always writes 4:2:0: "
                "set codec.subsampling = '4:2:0' or use codec.name = 'jpeg'"
            )
        return self


class LossConfig(Strict):
    alpha_rec: float = Field(0.0, ge=0.0, le=1.0, description="RecCNN loss = a*MSE + (1-a)*(1-MS-SSIM)")
    com_loss: ComLoss = Field(
        "mixture",
        description="ComCNN loss: 'mixture' = alpha_com mixture + rate_weight * rate proxy; 'gain' = "
        "gain_slope_db * ln(rate proxy) - MS-SSIM dB per image, the units of the dev gain over JPEG",
    )
    alpha_com: float = Field(
        0.0, ge=0.0, le=1.0, description="'mixture' ComCNN loss: a*MSE + (1-a)*(1-MS-SSIM)"
    )
    rate_weight: float = Field(
        0.01, ge=0.0, description="'mixture' ComCNN loss: weight of the DCT rate proxy (bits/px)"
    )
    gain_slope_db: float = Field(
        5.0,
        gt=0.0,
        description="'gain' ComCNN loss: JPEG's MS-SSIM dB per unit of ln(bpp), the price of rate "
        "(the dev JPEG curve's local slope is 4.4..5.6 between 0.17 and 0.75 bpp)",
    )
    fidelity_weight: float = Field(10.0, ge=0.0, description="weight of MSE(compact, bicubic downscale)")
    range_weight: float = Field(10.0, ge=0.0, description="penalty on compact values outside [0, 1]")
    mse_scale: float = Field(
        100.0, gt=0.0, description="MSE is multiplied by this so both loss terms have comparable size"
    )


class OptimizerConfig(Strict):
    lr: float = Field(
        1e-3, ge=0.0, le=1.0, description="peak learning rate; 0 freezes the net (its turns still run)"
    )
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: ScheduleName = "cosine"
    warmup_steps: int = Field(
        0, ge=0, description="linear warm-up over this net's own first optimizer steps (0: none)"
    )
    min_lr_ratio: float = Field(0.05, ge=0.0, le=1.0, description="cosine floor as a fraction of lr")
    step_every: int = Field(1000, ge=1, description="'step' schedule: steps between decays")
    step_gamma: float = Field(0.5, gt=0.0, le=1.0)
    grad_clip: float = Field(1.0, ge=0.0, description="max grad norm; 0 disables")


class GuardConfig(Strict):
    enabled: bool = True
    when: Literal["after-rec", "immediate"] = Field(
        "after-rec",
        description="judge a ComCNN turn once the RecCNN has had its next turn, or at the turn's end",
    )
    lr_cut: float = Field(0.5, gt=0.0, le=1.0, description="ComCNN lr multiplier after a rolled-back turn")
    tolerance_db: float = Field(
        0.0, ge=0.0, description="judge 'gain': a turn may lower the dev gain by this many dB"
    )
    tolerance_pct: float = Field(
        0.0, ge=0.0, description="judge 'rate': a turn may raise the dev rate by this many % of JPEG's"
    )

    @model_validator(mode="before")
    @classmethod
    def _old_name_of_when(cls, data: Any) -> Any:
        """``judge`` was ``when``'s name until ``training.judge`` (gain or rate) took it: configs and
        checkpoints written with it still load."""
        if not isinstance(data, dict) or "judge" not in data:
            return data
        if "when" in data:
            raise ValueError("give training.guard.when only: judge is its deprecated name")
        warnings.warn(
            "training.guard.judge is deprecated: it is training.guard.when", DeprecationWarning, stacklevel=2
        )
        return {("when" if key == "judge" else key): value for key, value in data.items()}


class TrainingConfig(Strict):
    gradient_mode: GradientMode = "straight-through"
    # Upper bounds no real run comes near; they refuse typos that would never finish
    epochs: int = Field(10, ge=1, le=100_000)
    steps_per_epoch: int = Field(200, ge=1, le=10_000_000)
    alternation_period: int = Field(0, ge=0, description="steps per turn; 0 = one epoch per turn (the paper)")
    rec_warmup_epochs: int = Field(1, ge=0, description="RecCNN-only epochs before alternation starts")
    first_turn: Literal["rec", "com"] = "com"
    batch_size: int = Field(8, ge=1, le=65_536)
    crop: int = Field(128, ge=16, le=16_384)
    time_budget_s: float | None = Field(
        None, gt=0.0, le=10 * 365 * 86_400, description="stop (and checkpoint) after this long"
    )
    schedule_clock: Literal["steps", "budget"] = Field(
        "steps",
        description="what the cosine learning-rate schedule runs over: 'steps', epochs x steps_per_epoch "
        "(reproducible on any machine); 'budget', whichever of the steps and time_budget_s runs out first, "
        "so a run that the clock stops has still decayed its learning rate to the floor",
    )
    guard: GuardConfig = GuardConfig()
    judge: Literal["gain", "rate"] = Field(
        "gain",
        description="what picks the best epoch and judges ComCNN turns: 'gain', the dev gain over JPEG in "
        "dB at each point's rate; 'rate', the dev rate against JPEG at each point's MS-SSIM (a discrete "
        "BD-rate: extra bytes always cost, also below JPEG's lowest rate)",
    )

    @model_validator(mode="after")
    def _crop_fits_codec_blocks(self) -> TrainingConfig:
        if self.crop % 16:
            raise ValueError(f"crop must be a multiple of 16 (JPEG macroblocks), got {self.crop}")
        return self

    @model_validator(mode="after")
    def _budget_clock_has_a_budget(self) -> TrainingConfig:
        if self.schedule_clock == "budget" and self.time_budget_s is None:
            raise ValueError("schedule_clock = 'budget' needs time_budget_s")
        return self


class DataConfig(Strict):
    train: str = Field("samples:train", description="image folder, or samples:train / samples:dev (skimage)")
    dev: str = Field("samples:dev", description="image folder used for per-epoch selection metrics")
    dev_max_images: int = Field(8, ge=1)
    dev_qualities: list[int] = Field(default_factory=lambda: [10, 30, 50, 75, 90])
    dev_max_side: int = Field(512, ge=32, description="dev images are centre-cropped to at most this side")
    dev_side_multiple: int = Field(
        1,
        ge=1,
        le=64,
        description="dev images are centre-cropped to sides that are multiples of this (16: whole JPEG "
        "macroblocks and even sides, as Kodak's 768x512); 1 keeps odd sides such as CBSD68's 481x321",
    )

    @model_validator(mode="after")
    def _qualities_valid(self) -> DataConfig:
        if not self.dev_qualities or any(not 1 <= q <= 100 for q in self.dev_qualities):
            raise ValueError(f"dev_qualities must be a non-empty list in 1..100, got {self.dev_qualities}")
        return self


class DeviceConfig(Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU)")
    channels_last: bool = True
    threads: int = Field(0, ge=0, description="torch intra-op threads on CPU; 0 = leave torch's default")
    # The input pipeline pays on a GPU, whose step waits for the CPU; on a CPU its threads compete with
    # torch's for the same cores (2 cores: +15 % per step), so None (the default) means on for CUDA only.
    prefetch_batches: int | None = Field(
        None,
        ge=0,
        le=16,
        description="training batches drawn ahead by a thread (0: drawn in the training step; default: 2 on "
        "CUDA, 0 on the CPU)",
    )
    overlap_codec: bool | None = Field(
        None,
        description="round-trip the next batch through the real codec while the current RecCNN step runs "
        "(the ComCNN is fixed then): the same batches and results, the codec threads off the critical path "
        "(default: on for CUDA, off on the CPU)",
    )
    cudnn_benchmark: bool = Field(True, description="let cuDNN time kernels for the fixed training shapes")


class TrainConfig(Strict):
    """The whole run. The search harness samples exactly this object."""

    model: ModelConfig = ModelConfig()
    codec: CodecConfig = CodecConfig()
    loss: LossConfig = LossConfig()
    optim_com: OptimizerConfig = OptimizerConfig(lr=1e-4)
    optim_rec: OptimizerConfig = OptimizerConfig()
    # codec.learn_tables: Adam on the log of each base table entry, so lr is a relative step
    optim_tables: OptimizerConfig = OptimizerConfig(lr=5e-3, grad_clip=0.0)
    training: TrainingConfig = TrainingConfig()
    data: DataConfig = DataConfig()
    device: DeviceConfig = DeviceConfig()
    seed: int = 0

    @model_validator(mode="after")
    def _learned_tables_can_learn(self) -> TrainConfig:
        """The tables learn on the ComCNN's turns, from the proxy's quantiser and rate: refuse runs where
        they would get no gradient or none from the rate (they would shrink to 1, the largest files)."""
        if not self.codec.learn_tables:
            return self
        problem = None
        if self.training.gradient_mode != "proxy":
            problem = "training.gradient_mode = 'proxy' (their gradient comes through the proxy's quantiser)"
        elif self.loss.com_loss == "mixture" and self.loss.rate_weight == 0:
            problem = "a rate term: loss.com_loss = 'gain' or loss.rate_weight > 0"
        elif self.training.rec_warmup_epochs >= self.training.epochs:
            problem = "ComCNN turns, on which they learn: training.rec_warmup_epochs < training.epochs"
        if problem:
            raise ValueError(f"codec.learn_tables needs {problem}")
        return self

    @model_validator(mode="after")
    def _crop_fits_ratio(self) -> TrainConfig:
        if self.training.crop % self.model.ratio:
            raise ValueError(
                f"training.crop = {self.training.crop} is not a multiple of model.ratio = {self.model.ratio} "
                "(a crop is downscaled whole)"
            )
        return self


class ConfigError(ValueError):
    """A preset or override that does not validate; the message names the field path."""


def format_validation_error(error: ValidationError) -> str:
    first = error.errors()[0]
    path = ".".join(str(part) for part in first["loc"])
    message = " ".join(first["msg"].removeprefix("Value error, ").split())  # one line, whatever the input
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{path}: {message}{more}" if path else f"{message}{more}"  # a whole-config check names its fields


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare strings: --set codec.name=webp
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        keys, value = _parse_override(text)
        node = data
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {key} is not a table")
            node = child
        node[keys[-1]] = value
    return data


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> TrainConfig:
    data = apply_overrides(copy.deepcopy(data), overrides or [])
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None


def read_toml(path: str | Path, what: str = "config") -> dict[str, Any]:
    """The TOML file's table; a missing or malformed file is a :class:`ConfigError` naming it."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:  # a folder, not UTF-8, a NUL in the path
        raise ConfigError(f"{what} file {path}: cannot be read: {error}") from None


SAMPLES_PREFIX = "samples:"  # data.train / data.dev naming a sample set inside scikit-image, not a folder
PATH_FIELDS = (("data", "train"), ("data", "dev"))  # the TrainConfig fields that name folders


def resolve_paths(data: dict[str, Any], base: str | Path) -> dict[str, Any]:
    """Make the relative folders of a TrainConfig dict (:data:`PATH_FIELDS`) absolute against ``base``, in
    place; absolute paths (``~`` expanded) and sample sets (``samples:dev``) are kept, anything not a string
    is left for validation. Paths written in a TOML file resolve against the file's folder, those given with
    ``--set`` against the working directory, so a run reads the same data wherever it is started.
    """
    base = Path(base).absolute()
    for table, key in PATH_FIELDS:
        node = data.get(table)
        value = node.get(key) if isinstance(node, dict) else None
        if isinstance(value, str) and value and not value.startswith(SAMPLES_PREFIX):
            node[key] = os.path.normpath(base / Path(value).expanduser())
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """A preset file with ``overrides``: the file's folders relative to it, the overrides' to the cwd."""
    data = apply_overrides(resolve_paths(read_toml(path), Path(path).parent), overrides or [])
    return config_from_dict(resolve_paths(data, Path.cwd()))
