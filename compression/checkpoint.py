"""Self-describing checkpoints, written atomically and loaded without executing code.

A checkpoint is a ``torch.save`` dict holding only tensors and plain Python values (config and history as
JSON text), so ``torch.load(weights_only=True)`` reads it; a truncated or foreign file raises
:class:`CheckpointError` with the path in the message.
"""

from __future__ import annotations

import io
import platform
from pathlib import Path
from typing import Any

import torch

from .files import atomic_write

FORMAT = "shrink-checkpoint/1"


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
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated zip, pickled objects, random bytes: all one answer
        raise CheckpointError(f"cannot load checkpoint {path}: {type(error).__name__}: {error}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a shrink checkpoint (format {FORMAT} expected)")
    return state


def model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode, its TrainConfig) from a training checkpoint."""
    from .config import TrainConfig
    from .models import build_model

    state = load_checkpoint(path)  # on the CPU; load_state_dict copies the weights to ``device``
    config = TrainConfig.model_validate_json(state["config"])
    model = build_model(config.model).to(device)
    model.load_state_dict(state["model"])
    return model.eval(), config
