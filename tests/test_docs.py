"""The README stays short and complete, and no Markdown link in README, docs/ or results/ points nowhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shrink.search.cli import COMMANDS

from .conftest import REPO

README = REPO / "README.md"
MARKDOWN = [README, *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "results").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_targets(page: Path) -> list[str]:
    targets = (match.group(1) for match in LINK.finditer(page.read_text()))
    return [target for target in targets if not re.match(r"[a-z]+:", target)]


def commands_table(text: str) -> str:
    return text.split("## Commands", 1)[1].split("\n## ", 1)[0]


def test_the_readme_is_at_most_12_kib():
    assert len(README.read_bytes()) <= 12 * 1024


def test_the_readme_links_every_docs_page_and_the_results_index_lists_every_result():
    readme_links = set(relative_targets(README))
    docs = {f"docs/{page.name}" for page in (REPO / "docs").glob("*.md") if page.name != "README.md"}
    assert docs and docs <= readme_links and "results/README.md" in readme_links
    results = {page.name for page in (REPO / "results").glob("2*.md")}
    assert results and results <= set(relative_targets(REPO / "results" / "README.md"))


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_resolves_to_a_file_in_the_repo(page: Path):
    broken = [
        target
        for target in relative_targets(page)
        if not (page.parent / target.split("#", 1)[0]).resolve().is_file()
    ]
    assert broken == []


def test_every_benchmark_appears_in_the_readme():
    text = README.read_text()
    folder = REPO / "benchmarks"
    benchmarks = sorted(path.name for path in folder.iterdir() if path.suffix in (".py", ".sh"))
    assert benchmarks and [name for name in benchmarks if f"`{name}`" not in text] == []


def test_every_shrink_subcommand_is_in_the_readmes_commands_table():
    table = commands_table(README.read_text())
    assert [name for name in COMMANDS if f"| `shrink {name}" not in table] == []
