"""The model zoo: trained codecs shipped inside the package, used by name wherever a bundle path goes.

``shrink compress PHOTO --model zoo:cpu``, ``shrink decompress``, ``shrink eval zoo:cpu`` and
:func:`shrink.compression.api.open_bundle` all take ``zoo:NAME``. Each model is a folder of
``compression/zoo_models``: ``bundle/`` (an export bundle, verified on load like any other) and
``card.json`` (:class:`ZooCard`: how it was trained, and its measured Kodak BD-rates with the commands
that measured them). A model trained later (the GPU preset, say) joins by adding such a folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .bdrate import safe_bd_rate
from .bundle import (
    BundleError,
    bundle_sha256,
    checkpoint_as_bundle,
    checkpoint_metrics,
    child_path,
    is_bundle,
    save_bundle,
    write_directory,
)
from .config import format_validation_error
from .files import atomic_write_text, read_json
from .names import ZOO_PREFIX, check_name, shown_name, valid_name
from .rd import RDCurve, read_curve_file

PREFIX = ZOO_PREFIX
ZOO_ROOT = Path(__file__).parent / "zoo_models"
CARD = "card.json"
BUNDLE = "bundle"
MAX_CARD_BYTES = 1 << 20


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class BdRates(_Record):
    """BD-rate (%) of the model against one anchor on Kodak, q5–95 grid; negative = fewer bits."""

    msssim_db: float = Field(ge=-100, le=1000)
    psnr: float | None = Field(default=None, ge=-100, le=1000)


class ZooCard(_Record):
    """What a zoo model is and how it was made; every figure with the command that measured it."""

    name: str
    description: str
    preset: str  # the committed training config, relative to the checkout
    train_command: str
    commit: str = Field(pattern=r"^[0-9a-f]{40}$")  # the checkout the training ran on
    trained: str  # how the run went: steps, wall time, best dev epoch
    bundle_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    eval_command: str
    bdrate_command: str
    curve: str  # the model's measured Kodak curve (`shrink eval` JSON, relative to the checkout)
    anchors: str  # the anchors' Kodak curves (`shrink baselines` JSON) the BD-rates are against
    kodak_bd_rate: dict[str, BdRates]  # anchor curve name -> BD-rates


def is_zoo_name(model: object) -> bool:
    return isinstance(model, str) and model.startswith(PREFIX)


def names(root: Path = ZOO_ROOT) -> list[str]:
    """The zoo's model names, sorted (folders of ``root`` with a valid name, holding a card)."""
    if not root.is_dir():
        return []
    return sorted(f.name for f in root.iterdir() if valid_name(f.name) and (f / CARD).is_file())


def model_folder(name: str, root: Path = ZOO_ROOT) -> Path:
    """The folder of zoo model ``name`` (valid names only; an unknown one is refused naming the known)."""
    try:
        folder = child_path(root, name, "zoo model") if valid_name(name) else None
    except BundleError:
        folder = None
    if folder is None or not (folder / CARD).is_file():
        known = ", ".join(PREFIX + known for known in names(root)) or "none"
        shown = name if isinstance(name, str) and name.isprintable() and len(name) <= 80 else shown_name(name)
        raise ValueError(f"{PREFIX}{shown}: no such zoo model (known: {known})")
    return folder


def bundle_path(name: str, root: Path = ZOO_ROOT) -> Path:
    return model_folder(name, root) / BUNDLE


def resolve(model: str | Path, root: Path = ZOO_ROOT) -> Path:
    """``zoo:NAME`` -> its bundle folder; any other model path as it is."""
    if is_zoo_name(model):
        return bundle_path(str(model)[len(PREFIX) :], root)
    return Path(model)


def model_for(bundle_sha256: str, source: str, root: Path = ZOO_ROOT) -> str:
    """``zoo:NAME`` of the zoo model whose bundle made a file (its header's sha256); else a one-line error."""
    for name in names(root):
        if card(name, root).bundle_sha256 == bundle_sha256:
            return PREFIX + name
    raise ValueError(
        f"{source} was made with bundle sha256 {bundle_sha256[:16]}..., which is no zoo model's; "
        "give --model (the bundle, family or checkpoint that compressed it)"
    )


def card(name: str, root: Path = ZOO_ROOT) -> ZooCard:
    """The card of zoo model ``name``, validated; a damaged card is one line naming the file."""
    path = model_folder(name, root) / CARD
    try:
        result = ZooCard.model_validate(read_json(path, MAX_CARD_BYTES, "zoo card", follow_links=False))
    except ValidationError as error:
        raise ValueError(f"{path}: not a zoo card ({format_validation_error(error)})") from None
    except ValueError as error:  # UnreadableFile among them: read_json bounds the nesting
        raise ValueError(f"{path}: not a zoo card ({error})") from None
    if result.name != name:
        raise ValueError(f"{path}: the card names {result.name!r}, its folder {name!r}")
    return result


def verify(name: str, root: Path = ZOO_ROOT) -> ZooCard:
    """The card, once its bundle verifies and is the one the card describes (its sha256)."""
    result, folder = card(name, root), bundle_path(name, root)
    if not is_bundle(folder):
        raise ValueError(f"{folder}: zoo model {name!r} has no bundle")
    if bundle_sha256(folder) != result.bundle_sha256:
        raise ValueError(f"{folder}: its bundle is not the one its card describes (sha256 differs)")
    return result


# ---------------------------------------------------------------- adding a model


def bd_rates(curve: RDCurve, anchors: Mapping[str, RDCurve]) -> dict[str, BdRates]:
    """BD-rates of ``curve`` against each anchor, as ``shrink bdrate`` computes them; an anchor whose MS-SSIM
    overlap is too small for one (:func:`safe_bd_rate`) is left out, a PSNR one is None."""
    rates = {}
    for name, anchor in anchors.items():
        msssim, _ = safe_bd_rate(anchor, curve, "msssim_db")
        if msssim is not None:
            rates[name] = BdRates(
                msssim_db=round(msssim, 2), psnr=_rounded(safe_bd_rate(anchor, curve, "psnr")[0])
            )
    return rates


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def evaluation_meta(curve_file: str | Path) -> dict[str, str]:
    """What ``shrink eval`` tagged ``curve_file`` with: the bundle's sha256 and the image folder."""
    document = read_curve_file(curve_file)
    meta = document.get("meta") if isinstance(document, dict) else None
    if not isinstance(meta, dict) or not all(
        isinstance(meta.get(key), str) for key in ("bundle_sha256", "data")
    ):
        raise ValueError(
            f"{curve_file}: not a `shrink eval` curve of a bundle (no meta.bundle_sha256 and data)"
        )
    return {key: meta[key] for key in ("bundle_sha256", "data")}


def add_model(draft: ZooCard, checkpoint: str | Path, root: Path = ZOO_ROOT, overwrite: bool = False) -> Path:
    """Export ``checkpoint`` into the zoo as ``draft.name`` with its card; the card's curves must be the
    evaluation of that very bundle (``shrink eval`` tags them with its sha256), else nothing is written."""
    check_name(draft.name, "zoo model")
    model, config, sha256 = checkpoint_as_bundle(checkpoint)
    if draft.bundle_sha256 != sha256:
        raise ValueError(
            f"{draft.curve}: evaluated bundle {draft.bundle_sha256[:16]}..., but {checkpoint} exports as "
            f"{sha256[:16]}...; run shrink eval on the bundle of this checkpoint"
        )
    card_text = draft.model_dump_json(indent=1) + "\n"

    def fill(tmp: Path) -> None:  # the bundle and its card appear together, or not at all
        save_bundle(tmp / BUNDLE, model, config, checkpoint_metrics(checkpoint))
        atomic_write_text(tmp / CARD, card_text)

    return write_directory(child_path(root, draft.name, "zoo model"), fill, overwrite)
