"""The folders install as shrink.* subpackages; none may shadow the stdlib `compression` (3.14+)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

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


def test_compression_knows_nothing_of_search_or_optuna():
    forbidden = re.compile(r"^\s*(from|import)\s+(optuna|shrink\.search|shrink\.dashboards)\b", re.MULTILINE)
    for path in (REPO / "compression").glob("*.py"):
        match = forbidden.search(path.read_text())
        assert match is None, f"{path.name}: {match.group(0).strip() if match else ''}"


def test_search_reads_nothing_from_dashboards_outside_the_cli():
    """search/ stores, dashboards/ reads; only the CLI (a thin layer over all three) wires them together."""
    forbidden = re.compile(r"^\s*(from|import)\s+shrink\.dashboards\b", re.MULTILINE)
    for path in (REPO / "search").glob("*.py"):
        match = forbidden.search(path.read_text())
        assert match is None, f"{path.name}: {match.group(0).strip() if match else ''}"
