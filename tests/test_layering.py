"""Imports run one way: compression <- search <- dashboards, and the CLI (search/cli/) over all three.

An AST scan of the sources (relative imports resolved), so a docstring or a string naming a module (a
subprocess running ``python -m shrink.search.cli``) is not an import, and an import inside a function is.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO

PACKAGES = {"compression": "shrink.compression", "search": "shrink.search", "dashboards": "shrink.dashboards"}
CLI = "shrink.search.cli"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    dotted = ".".join((PACKAGES[parts[0]], *parts[1:]))
    return dotted.removesuffix(".__init__")


def sources(folder: str) -> Iterator[tuple[str, ast.Module]]:
    """(module name, syntax tree) of every module under ``folder``, the CLI's included."""
    for path in sorted((REPO / folder).rglob("*.py")):
        yield module_name(path), ast.parse(path.read_text(), str(path))


def imported(module: str, tree: ast.Module) -> Iterator[str]:
    """Every module ``module`` imports, as absolute names (``from x import y`` yields x and x.y)."""
    package = module if module in {*PACKAGES.values(), CLI} else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            origin = ".".join([*base, *([node.module] if node.module else [])])
            yield origin
            yield from (f"{origin}.{alias.name}" for alias in node.names)


def is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def below_the_cli(folder: str) -> Iterator[tuple[str, ast.Module]]:
    return ((module, tree) for module, tree in sources(folder) if not is_within(module, CLI))


def offending(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{module} imports {name}"
        for module, tree in below_the_cli(folder)
        for name in imported(module, tree)
        if any(is_within(name, package) for package in forbidden)
    ]


def mentions_namespace(node: ast.AST) -> bool:
    """``Namespace``, ``argparse.Namespace`` or a string annotation naming it."""
    if isinstance(node, ast.Name | ast.Attribute):
        return "Namespace" in ast.unparse(node)
    return (
        isinstance(node, ast.Constant) and isinstance(node.value, str) and "argparse.Namespace" in node.value
    )


def test_the_scan_resolves_relative_imports():
    tree = ast.parse("from .cli import export\nfrom ..compression.api import compress_image\nimport optuna")
    names = set(imported("shrink.search.refine", tree))
    assert {"shrink.search.cli.export", "shrink.compression.api.compress_image", "optuna"} <= names
    assert "shrink.search.cli" in set(imported("shrink.search", ast.parse("from . import cli")))


@pytest.mark.parametrize("folder", sorted(PACKAGES))
def test_nothing_below_the_cli_imports_it(folder: str):
    assert offending(folder, (CLI,)) == []


@pytest.mark.parametrize("folder", sorted(PACKAGES))
def test_argparse_stays_in_the_cli(folder: str):
    """Library functions take values, never an ``argparse.Namespace``."""
    assert offending(folder, ("argparse",)) == []
    namespaces = [
        f"{module}: {ast.unparse(node)}"
        for module, tree in below_the_cli(folder)
        for node in ast.walk(tree)
        if mentions_namespace(node)
    ]
    assert namespaces == []


def test_compression_knows_nothing_of_optuna_search_or_dashboards():
    assert offending("compression", ("optuna", "shrink.search", "shrink.dashboards")) == []


def test_search_reads_nothing_from_dashboards_outside_the_cli():
    """search/ stores, dashboards/ reads; only the CLI (a thin layer over all three) wires them together."""
    assert offending("search", ("shrink.dashboards",)) == []


def test_search_and_dashboards_import_without_the_cli():
    modules = [module for folder in PACKAGES for module, _ in below_the_cli(folder)]
    script = f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
    script += f"print(sorted(m for m in sys.modules if m == {CLI!r} or m.startswith({CLI + '.'!r})))"
    result = subprocess.run([sys.executable, "-P", "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
