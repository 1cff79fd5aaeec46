"""The folders install as shrink.* subpackages; none may shadow the stdlib `compression` (3.14+).

Which may import which: test_layering.py."""

from __future__ import annotations

import importlib.util
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
