"""Self-describing checkpoints, written atomically and loaded without executing code.

A checkpoint is a ``torch.save`` dict holding only tensors and plain Python values (config and history as
JSON text), so ``torch.load(weights_only=True)`` reads it; a missing, truncated, foreign or hostile file (one
that is no regular file, is too large, holds pickled code, lacks its config or holds weights that do not fit
it) raises :class:`CheckpointError`: one line with the path, never a library's warning or multi-line text.
"""

from __future__ import annotations

import io
import pickle
import platform
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .files import UnreadableFile, atomic_write, read_start

FORMAT = "shrink-checkpoint/1"
LEARNED_TABLES_KEY = "learned_tables"  # codec.learn_tables: the integer base tables reached, (2, 64)
# How every file torch.save writes starts: a zip archive (a legacy one: a pickle, protocol 2 or later)
TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80")
MAX_CHECKPOINT_BYTES = 16 << 30  # weights and optimizer state of the largest configs are ~6 GB
# torch warns (several lines) about pickle protocols as it refuses a foreign pickle: the refusal says it all
warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, truncated, not ours, incompatible)."""


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import PIL
    import pytorch_msssim

    try:
        shrink_version = version("shrink")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        shrink_version = "unknown"
    return {
        "shrink": shrink_version,
        "torch": str(torch.__version__),
        "pillow": PIL.__version__,
        "pytorch_msssim": getattr(pytorch_msssim, "__version__", "unknown"),
        "python": platform.python_version(),
    }


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    state = {"format": FORMAT, "versions": versions(), **state}
    # Serialised in memory first: a failed write (a full disk) then raises its own OSError, which torch's zip
    # writer would bury in "RuntimeError: [enforce fail at inline_container.cc] unexpected pos".
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write(path, lambda handle: handle.write(buffer.getbuffer()))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    _check_file(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated zip, pickled objects, random bytes: all one answer
        raise CheckpointError(f"cannot load checkpoint {path}: {_load_error_line(error)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a shrink checkpoint (format {FORMAT} expected)")
    return state


def _check_file(path: Path) -> None:
    """A regular file of bounded size that starts as torch.save's files do: a text file or an image is
    refused here, before torch's unpickler reads its bytes as opcodes (a bare ``KeyError: 105``)."""
    try:
        start = read_start(path, len(TORCH_FILE_STARTS[0]), MAX_CHECKPOINT_BYTES, "checkpoint")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except (UnreadableFile, OSError) as error:
        raise CheckpointError(f"cannot load checkpoint {path}: {error}") from None
    if not start.startswith(TORCH_FILE_STARTS):
        raise CheckpointError(f"{path} is not a shrink checkpoint (not a file torch.save writes)")


def _load_error_line(error: Exception) -> str:
    """One line for torch.load's failure; the weights-only refusal's own several lines are reduced to why."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if isinstance(error, pickle.UnpicklingError) and len(lines) > 1:
        reasons = [line for line in lines[1:] if not line.startswith(("Please file", "Check the doc"))]
        return "refused: it holds pickled objects, not only tensors and plain values" + (
            f" ({reasons[0]})" if reasons else ""
        )
    return one_line(f"{type(error).__name__}: {lines[0] if lines else ''}")


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def state_dict_mismatch(model_config, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """Why tensors of these ``shapes`` are not the state dict of the model ``model_config`` builds (None when
    they are). The model is built on the meta device: shapes only, so a config far larger than the weights
    costs no memory."""
    from .models import build_model

    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in build_model(model_config).state_dict().items()}
    missing, unexpected = sorted(expected.keys() - shapes.keys()), sorted(shapes.keys() - expected.keys())
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        return f"missing {', '.join(missing[:3])}{more}"
    if unexpected:
        return f"unexpected {', '.join(unexpected[:3])}"
    wrong = next((name for name in expected if tuple(shapes[name]) != expected[name]), None)
    if wrong is not None:
        return f"{wrong} is {tuple(shapes[wrong])}, the config's model has {expected[wrong]}"
    return None


def with_learned_tables(config, learned: Any):
    """``config`` with the tables a run learned as fixed ``codec.base_tables`` (validated like any config)."""
    codec = config.codec.model_dump() | {"tables": None, "base_tables": learned, "learn_tables": False}
    return type(config).model_validate(config.model_dump() | {"codec": codec})


def model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode, its TrainConfig) from a training checkpoint; the config and the weights' shapes
    are checked before the model is built. A run that learned its tables (``codec.learn_tables``) gives the
    config of the codec it trained: the tables it reached, as ``codec.base_tables``."""
    from pydantic import ValidationError

    from .config import TrainConfig, format_validation_error
    from .models import build_model

    state = load_checkpoint(path)  # on the CPU; load_state_dict copies the weights to ``device``
    weights = state.get("model")
    if not isinstance(state.get("config"), str) or not isinstance(weights, dict):
        raise CheckpointError(f"{path}: a shrink checkpoint without its config or model weights (damaged)")
    try:
        config = TrainConfig.model_validate_json(state["config"])
        if config.codec.learn_tables:
            if state.get(LEARNED_TABLES_KEY) is None:
                raise CheckpointError(f"{path}: a run that learned its tables, without them (damaged)")
            config = with_learned_tables(config, state[LEARNED_TABLES_KEY])
    except ValidationError as error:
        raise CheckpointError(f"{path}: its config is invalid: {format_validation_error(error)}") from None
    shapes = {name: tuple(getattr(t, "shape", ())) for name, t in weights.items()}
    problem = state_dict_mismatch(config.model, shapes)
    if problem is not None:
        raise CheckpointError(f"{path}: the model weights do not fit its config: {problem}")
    model = build_model(config.model).to(device)
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, ValueError) as error:
        problem = one_line(str(error))
        raise CheckpointError(f"{path}: the model weights do not fit its config: {problem}") from None
    return model.eval(), config
