"""The folders install as shrink.* subpackages; none may shadow the stdlib `compression` (3.14+).

Which may import which: test_layering.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import shrink.compression
import shrink.dashboards
import shrink.search

from .conftest import REPO


def test_subpackages_map_to_the_top_level_folders():
    assert Path(shrink.compression.__file__).parent == REPO / "compression"
    assert Path(shrink.search.__file__).parent == REPO / "search"
    assert Path(shrink.dashboards.__file__).parent == REPO / "dashboards"


def test_top_level_compression_is_never_our_folder():
    spec = importlib.util.find_spec("compression")
    if sys.version_info >= (3, 14):
        assert spec is not None and "site-packages" not in str(spec.origin)
    assert spec is None or Path(spec.origin).parent != REPO / "compression"


def test_package_data_ships_every_reference_curve_file_and_its_attribution():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["shrink.dashboards"]
    shipped = {path for pattern in patterns for path in (REPO / "dashboards").glob(pattern)}
    present = {path for path in (REPO / "dashboards" / "reference-curves").rglob("*") if path.is_file()}
    assert len(present) >= 10 and shipped == present
    assert all(
        (folder / "README.md").is_file() and (folder / "LICENSE").is_file()
        for folder in {p.parent for p in present}
    )
