"""A codec family: several bundles (say, one per downscale ratio or rate range) used as one codec.

Each member has an RD curve measured on a test set. The family's curve is the upper envelope of the members'
curves: at each rate, the member whose curve is highest there (:meth:`Family.member_at`, PCHIP over
log-rate as :func:`rd.metric_at_rate`; a member never answers below its own lowest measured rate). That
envelope is what a BD-rate of the family measures, and what ``shrink compress --model FAMILY --bpp T`` uses
to pick the member for a target rate; the file's header names the member's bundle, so ``shrink
decompress`` finds it again.

A family is a directory: ``family.json`` (format, metric, test set, and per member its name, bundle sha256
and test curve) and ``members/<name>/``, one verified bundle each. Its identity ``sha256`` is the sha256 of
the member lines ``"<name> <bundle sha256>\\n"`` and the canonical JSON of the curves. It is written into a
temp sibling directory and renamed into place; loading verifies every member bundle against its sha256.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .bundle import (
    BundleError,
    bundle_sha256,
    child_path,
    is_bundle,
    load_bundle,
    read_format_json,
    write_directory,
)
from .files import atomic_write_text
from .models import ShrinkModel
from .names import NAME_RULE, shown_names, valid_name
from .rd import RDCurve, RDPoint, metric_at_rate

FAMILY_FORMAT = "shrink-family/1"
FAMILY_FILE = "family.json"
MEMBERS = "members"


@dataclass(frozen=True)
class Member:
    name: str
    sha256: str  # the member bundle's identity (what a shrink file's header names)
    curve: RDCurve  # measured on the family's test set

    @property
    def lowest_rate(self) -> float:
        return min(point.bpp for point in self.curve.points)


@dataclass(frozen=True)
class Family:
    path: Path
    members: tuple[Member, ...]
    metric: str
    test: str
    sha256: str

    def member_at(self, bpp: float) -> Member:
        return member_at(self.members, bpp, self.metric)

    def envelope(self) -> list[tuple[str, RDPoint]]:
        return envelope(self.members, self.metric)

    def envelope_curve(self, name: str = "family") -> RDCurve:
        return envelope_curve(self.members, self.metric, name)

    def measured_on(self, data: str | Path) -> bool:
        """Whether the members' test curves were measured on the image folder (or sample set) ``data``."""
        return Path(self.test).resolve() == Path(data).resolve()

    def member(self, sha256: str) -> Member | None:
        return next((m for m in self.members if m.sha256 == sha256), None)

    def bundle_path(self, member: Member) -> Path:
        """``members/<name>``: a plain name read from ``family.json``, so never a path outside the family."""
        return child_path(self.path / MEMBERS, member.name, "family member")

    def load_member(self, member: Member, device="cpu") -> ShrinkModel:
        model, _, manifest = load_bundle(self.bundle_path(member), device)
        if manifest["sha256"] != member.sha256:  # verified on load_family; the files may change since
            raise BundleError(f"{self.bundle_path(member)}: not the bundle {FAMILY_FILE} lists")
        return model


def member_at(members: Sequence[Member], bpp: float, metric: str = "msssim_db") -> Member:
    """The member whose test curve is highest at rate ``bpp`` among those that reach down to it; below
    every member's lowest rate, the member reaching lowest."""
    reachable = [m for m in members if m.lowest_rate <= bpp]
    if not reachable:
        return min(members, key=lambda m: m.lowest_rate)
    return max(reachable, key=lambda m: metric_at_rate(m.curve, bpp, metric))


def envelope(members: Sequence[Member], metric: str = "msssim_db") -> list[tuple[str, RDPoint]]:
    """The members' points on the family's envelope (each point's member is the one :func:`member_at`
    picks at its rate), by rate: (member name, point)."""
    points = [(m.name, p) for m in members for p in m.curve.points if member_at(members, p.bpp, metric) is m]
    return sorted(points, key=lambda item: item[1].bpp)


def envelope_curve(members: Sequence[Member], metric: str = "msssim_db", name: str = "family") -> RDCurve:
    """The envelope as one RD curve: what a BD-rate of the family measures."""
    return RDCurve(name, [point for _, point in envelope(members, metric)])


def is_family(path: str | Path) -> bool:
    return (Path(path) / FAMILY_FILE).is_file()


def _identity(members: Sequence[dict]) -> str:
    lines = "".join(f"{m['name']} {m['sha256']}\n" for m in members)
    curves = json.dumps([m["curve"] for m in members], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((lines + curves).encode()).hexdigest()


def save_family(
    out_dir: str | Path,
    members: Sequence[tuple[str, Path, RDCurve]],
    *,
    test: str,
    metric: str = "msssim_db",
    overwrite: bool = False,
) -> Path:
    """Write the family of ``members`` ((name, bundle directory, test curve) each) at ``out_dir``.

    Refuses an empty list, repeated names, a member that is not a verified bundle or has no curve points,
    and an existing non-empty ``out_dir`` unless ``overwrite``; a failed write leaves ``out_dir`` untouched.
    """
    out_dir = Path(out_dir)
    if not members:
        raise BundleError(f"{out_dir}: a family needs at least one member")
    check_member_names([name for name, _, _ in members], out_dir)
    table = []
    for name, bundle, curve in members:
        if not is_bundle(bundle):
            raise BundleError(f"family member {name}: {bundle} is not a shrink bundle")
        if not curve.points:
            raise BundleError(f"family member {name}: its test curve has no points")
        points = [point.to_dict() for point in curve.points]
        table.append(
            {"name": name, "sha256": bundle_sha256(bundle), "curve": {"name": name, "points": points}}
        )
    document = {"format": FAMILY_FORMAT, "metric": metric, "test": test, "members": table}
    document["sha256"] = _identity(table)

    def fill(tmp: Path) -> None:
        for (name, bundle, _), entry in zip(members, table, strict=True):
            shutil.copytree(bundle, tmp / MEMBERS / name)
            if bundle_sha256(tmp / MEMBERS / name) != entry["sha256"]:
                raise BundleError(f"family member {name}: {bundle} changed while it was copied")
        atomic_write_text(tmp / FAMILY_FILE, json.dumps(document, indent=1) + "\n")

    return write_directory(out_dir, fill, overwrite)


def check_member_names(names: list, where: str | Path) -> None:
    """Refuse repeated member names and any that is not a valid name (:mod:`shrink.compression.names`)."""
    if not all(valid_name(name) for name in names) or len(set(names)) != len(names):  # set() needs str
        shown = shown_names(names)
        raise BundleError(f"{where}: member names must be distinct plain names ({NAME_RULE}), got {shown}")


def _check_curve(file: Path, member: Member) -> None:
    points = member.curve.points
    values = [v for p in points for v in (p.bpp, p.msssim, p.msssim_db, p.psnr)]
    if not points or not all(math.isfinite(v) for v in values) or min(p.bpp for p in points) <= 0:
        raise BundleError(f"{file}: member {member.name}: its curve needs points of finite values, bpp > 0")


def load_family(path: str | Path) -> Family:
    """The family at ``path``, every member bundle verified against the sha256 ``family.json`` lists."""
    path = Path(path)
    file = path / FAMILY_FILE
    document = read_format_json(file, path, FAMILY_FORMAT, "shrink family")
    try:
        table = document["members"]
        members = tuple(Member(e["name"], e["sha256"], RDCurve.from_dict(e["curve"])) for e in table)
        metric, test = str(document["metric"]), str(document["test"])
        identity = _identity(table)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
        raise BundleError(f"{file}: malformed member table ({type(error).__name__}: {error})") from None
    if not members or document.get("sha256") != identity:
        raise BundleError(f"{file}: sha256 does not match the member table (altered?)")
    check_member_names([m.name for m in members], file)
    for member in members:
        _check_curve(file, member)
    family = Family(path, members, metric, test, document["sha256"])
    for member in members:
        if bundle_sha256(family.bundle_path(member)) != member.sha256:
            raise BundleError(f"{family.bundle_path(member)}: not the bundle {FAMILY_FILE} lists (altered?)")
    return family
