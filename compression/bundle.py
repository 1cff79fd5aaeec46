"""Export bundles: one trained codec as a directory that loads without executing code.

A bundle holds ``config.json`` (the resolved TrainConfig), ``weights.safetensors`` (the model's state_dict),
``metrics.json`` (whatever the exporter measured) and ``manifest.json``: the format, the library versions, the
sha256 and size of every other file, and the bundle's identity ``sha256``, the sha256 of the lines
``"<name> <file sha256>\\n"`` in name order. Identical contents give the identical identity.

Bundles are written into a temp sibling directory and renamed into place; loading verifies every file
against the manifest before parsing any of it: each a plain name in the bundle (no link, no ``..``), a
regular file of bounded size. The weights' tensor shapes are checked against the model the config describes
(built on the meta device, no memory) before the model is built. Anything wrong raises :class:`BundleError`
naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from .checkpoint import load_checkpoint, model_from_checkpoint, one_line, state_dict_mismatch, versions
from .config import TrainConfig, format_validation_error
from .files import UnreadableFile, public_mode, read_json, read_regular
from .models import ShrinkModel, build_model

BUNDLE_FORMAT = "shrink-bundle/1"
MANIFEST = "manifest.json"
CONFIG = "config.json"
WEIGHTS = "weights.safetensors"
METRICS = "metrics.json"
REQUIRED_FILES = (CONFIG, WEIGHTS, METRICS)
MAX_JSON_BYTES = 16 << 20  # manifest.json, family.json: a few kB in practice
MAX_FILE_BYTES = 2 << 30  # any file a manifest lists (the weights of the largest configs are ~1.4 GB)


class BundleError(ValueError):
    """A bundle that cannot be used (missing, altered, truncated, not ours, invalid config)."""


class OutputExists(BundleError):
    """An existing non-empty output folder, refused without ``overwrite`` (a command's ``--force``)."""

    def __init__(self, path: Path, remedy: str = "overwrite=True") -> None:
        super().__init__(f"{path} exists and is not empty (pass {remedy} to replace it)")
        self.path = path


# ---------------------------------------------------------------- writing


def save_bundle(
    out_dir: str | Path, model: nn.Module, config: TrainConfig, metrics: dict, *, overwrite: bool = False
) -> Path:
    """Write ``model`` + ``config`` + ``metrics`` as a bundle at ``out_dir``; returns ``out_dir``.

    Refuses an existing non-empty ``out_dir`` unless ``overwrite``; a failed write leaves it untouched.
    """
    out_dir = Path(out_dir)
    model_config = getattr(model, "config", None)
    if model_config is not None and model_config != config.model:
        raise BundleError(f"{out_dir}: the model was not built from config.model; its bundle would not load")
    _check_target(out_dir, overwrite)
    contents = _bundle_contents(model, config, metrics)

    def fill(tmp: Path) -> None:
        for name, data in contents.items():
            _write_synced(tmp / name, data)

    return write_directory(out_dir, fill, overwrite)


def write_directory(out_dir: Path, fill: Callable[[Path], None], overwrite: bool) -> Path:
    """``fill`` a temp sibling directory, then rename it to ``out_dir`` (an existing non-empty one only with
    ``overwrite``); on any failure the temp directory is removed and ``out_dir`` is untouched."""
    _check_target(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        public_mode(tmp, directory=True)
        fill(tmp)
        _fsync_dir(tmp)
        _publish(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def check_directory_target(out_dir: str | Path, overwrite: bool) -> None:
    """Refuse now what :func:`write_directory` would refuse at the end (for callers with long work first)."""
    _check_target(Path(out_dir), overwrite)


def bundle_from_checkpoint(
    checkpoint_path: str | Path, out_dir: str | Path, metrics: dict, overwrite: bool = False
) -> Path:
    """Export the model and config of a training checkpoint as a bundle."""
    model, config = model_from_checkpoint(checkpoint_path)
    return save_bundle(out_dir, model, config, metrics, overwrite=overwrite)


def checkpoint_metrics(checkpoint_path: str | Path) -> dict:
    """What a bundle exported from a checkpoint says of its training: the file's name, epoch, step and best
    dev score (no path: a bundle travels)."""
    state = load_checkpoint(checkpoint_path)
    facts = {key: state.get(key) for key in ("epoch", "step", "best_score")}
    finite = {
        key: value for key, value in facts.items() if isinstance(value, (int, float)) and math.isfinite(value)
    }
    return {"checkpoint": Path(checkpoint_path).name, **finite}


def checkpoint_as_bundle(
    checkpoint_path: str | Path, device: str | torch.device = "cpu"
) -> tuple[ShrinkModel, TrainConfig, str]:
    """(model, config, sha256) of the bundle :func:`bundle_from_checkpoint` would export from the checkpoint,
    without writing it: a file compressed with the checkpoint decompresses with that bundle, and back."""
    model, config = model_from_checkpoint(checkpoint_path, device)
    contents = _bundle_contents(model, config, checkpoint_metrics(checkpoint_path))
    files = {name: {"sha256": _sha256(data)} for name, data in contents.items() if name != MANIFEST}
    return model, config, _identity(files)


def _bundle_contents(model: nn.Module, config: TrainConfig, metrics: dict) -> dict[str, bytes]:
    """Every file's bytes, the manifest last; built in memory so a bad argument writes nothing."""
    tensors = {name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()}
    contents = {
        CONFIG: config.model_dump_json(indent=2).encode(),
        WEIGHTS: save_safetensors(tensors, metadata={"format": BUNDLE_FORMAT}),
        METRICS: _json_bytes(metrics),
    }
    files = {name: {"sha256": _sha256(data), "bytes": len(data)} for name, data in contents.items()}
    manifest = {"format": BUNDLE_FORMAT, "versions": versions(), "files": files, "sha256": _identity(files)}
    return {**contents, MANIFEST: _json_bytes(manifest)}


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise BundleError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise OutputExists(out_dir)


def _publish(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename ``tmp`` to ``out_dir``; an old non-empty ``out_dir`` is moved aside first and then deleted."""
    _check_target(out_dir, overwrite)
    if not (out_dir.is_dir() and any(out_dir.iterdir())):
        os.replace(tmp, out_dir)  # absent or empty: one atomic rename
    else:
        old = tmp.with_name(tmp.name + ".old")
        os.rename(out_dir, old)
        try:
            os.rename(tmp, out_dir)
        except BaseException:
            os.rename(old, out_dir)
            raise
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(out_dir.parent)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _identity(files: dict[str, dict[str, Any]]) -> str:
    return _sha256("".join(f"{name} {files[name]['sha256']}\n" for name in sorted(files)).encode())


# ---------------------------------------------------------------- reading


def is_bundle(path: str | Path) -> bool:
    """True for a directory holding a ``manifest.json`` (not a verification: see :func:`load_bundle`)."""
    path = Path(path)
    return path.is_dir() and (path / MANIFEST).is_file()


def bundle_sha256(path: str | Path) -> str:
    """The bundle's identity, after verifying every file against the manifest."""
    manifest, _ = _verified_files(Path(path))
    return manifest["sha256"]


def load_bundle(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[ShrinkModel, TrainConfig, dict]:
    """(model in eval mode, its TrainConfig, the manifest); every file is verified before it is parsed."""
    path = Path(path)
    manifest, contents = _verified_files(path)
    config = _parse_config(path, contents[CONFIG])
    _check_weights_fit(path / WEIGHTS, config, contents[WEIGHTS])
    model = build_model(config.model)
    try:
        model.load_state_dict(load_safetensors(contents[WEIGHTS]))
    except Exception as error:  # header garbage, missing or unexpected keys, wrong shapes
        raise BundleError(f"{path / WEIGHTS}: does not fit config.model: {_one_line(error)}") from None
    return model.to(device).eval(), config, manifest


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[ShrinkModel, TrainConfig]:
    """(model in eval mode, TrainConfig) from a bundle directory or a training checkpoint file."""
    if is_bundle(path) or Path(path).is_dir():  # a directory without manifest gets the bundle's error
        model, config, _ = load_bundle(path, device)
        return model, config
    return model_from_checkpoint(path, device)


def _verified_files(path: Path) -> tuple[dict, dict[str, bytes]]:
    """(manifest, {name: bytes}) once every listed file matches its size and sha256."""
    manifest = _read_manifest(path)
    contents: dict[str, bytes] = {}
    for name, entry in manifest["files"].items():
        contents[name] = _verified_file(child_path(path, name, "bundle file"), entry)
    return manifest, contents


def plain_name(name: object) -> bool:
    """A name read from a file that may be joined to a folder: one component, not ``.`` or ``..``."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(c in name for c in "/\\\0")
        and Path(name).name == name
        and len(name.encode()) <= 255
    )


def child_path(folder: Path, name: object, what: str) -> Path:
    """``folder / name`` for a ``name`` read from a file: a plain name, not a link, resolving inside
    ``folder``; else :class:`BundleError`."""
    if not plain_name(name):
        raise BundleError(f"{folder}: {what} {name!r} is not a plain name (one component, no '..')")
    path = folder / name
    if path.is_symlink():
        raise BundleError(f"{path}: {what} is a symbolic link (refused)")
    if path.resolve().parent != folder.resolve():
        raise BundleError(f"{path}: {what} resolves outside {folder} (refused)")
    return path


def read_format_json(file: Path, owner: Path, fmt: str, what: str) -> dict:
    """The JSON object in ``file`` (of the directory ``owner``), whose ``format`` must be ``fmt``; anything
    else is a :class:`BundleError` saying that ``owner`` is not a ``what``."""
    try:
        document = read_json(file, MAX_JSON_BYTES, file.name, follow_links=False)
    except FileNotFoundError:
        raise BundleError(f"{file} is missing: {owner} is not a {what}") from None
    except UnreadableFile as error:  # not a regular file, not JSON, too deep, a number out of range
        raise BundleError(str(error)) from None
    if not isinstance(document, dict) or document.get("format") != fmt:
        raise BundleError(f"{owner} is not a {what} ({file}: format {fmt} expected)")
    return document


def _read_manifest(path: Path) -> dict:
    if not path.is_dir():
        raise BundleError(f"bundle not found: {path} is not a directory")
    manifest_path = path / MANIFEST
    manifest = read_format_json(manifest_path, path, BUNDLE_FORMAT, "shrink bundle")
    _check_file_table(manifest_path, manifest.get("files"))
    if manifest.get("sha256") != _identity(manifest["files"]):
        raise BundleError(f"{manifest_path}: sha256 does not match the file table")
    return manifest


def _check_file_table(manifest_path: Path, files: Any) -> None:
    if not isinstance(files, dict) or not set(REQUIRED_FILES) <= set(files):
        raise BundleError(f"{manifest_path}: 'files' must list {', '.join(REQUIRED_FILES)}")
    for name, entry in files.items():
        if not plain_name(name) or name == MANIFEST:
            raise BundleError(f"{manifest_path}: {name!r} is not a plain file name of the bundle")
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise BundleError(f"{manifest_path}: entry {name!r} has no sha256")
        size = entry.get("bytes")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_BYTES:
            raise BundleError(f"{manifest_path}: entry {name!r} has no byte count in 0..{MAX_FILE_BYTES}")


def _verified_file(file: Path, entry: dict) -> bytes:
    try:
        data = read_regular(file, entry["bytes"], "bundle file")
    except FileNotFoundError:
        raise BundleError(f"{file} is missing") from None
    except UnreadableFile as error:
        raise BundleError(f"{error} (the manifest says {entry['bytes']} bytes)") from None
    if len(data) != entry["bytes"]:
        raise BundleError(f"{file}: {len(data)} bytes, the manifest says {entry['bytes']} (truncated?)")
    if _sha256(data) != entry["sha256"]:
        raise BundleError(f"{file}: sha256 mismatch with the manifest (altered)")
    return data


def _parse_config(path: Path, data: bytes) -> TrainConfig:
    try:
        return TrainConfig.model_validate_json(data)
    except ValidationError as error:
        raise BundleError(f"{path / CONFIG}: {format_validation_error(error)}") from None


def _check_weights_fit(file: Path, config: TrainConfig, data: bytes) -> None:
    """Refuse weights whose tensors (names, shapes) are not those of ``config.model``'s model, before it is
    built: a config far larger than its weights costs no memory."""
    problem = state_dict_mismatch(config.model, _safetensors_shapes(file, data))
    if problem is not None:
        raise BundleError(f"{file}: does not fit config.model: {problem}")


def _safetensors_shapes(file: Path, data: bytes) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} from a safetensors header (8-byte length, then JSON), reading no tensor."""
    try:
        length = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + length]) if 8 + length <= len(data) else None
        return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except (ValueError, TypeError, KeyError, AttributeError):
        raise BundleError(f"{file}: not a safetensors file (corrupt header)") from None


def _one_line(error: Exception) -> str:
    return one_line(str(error)) or type(error).__name__
