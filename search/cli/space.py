"""shrink space SPEC: the search space as the JSON ``optuna ask --search-space`` takes."""

from __future__ import annotations

import argparse

from shrink.search.space import search_space_json
from shrink.search.spec import load_spec

from ._common import ArgumentParser, run_command


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="shrink space", description="Print SPEC's search space as JSON for `optuna ask --search-space`."
    )
    parser.add_argument("spec", help="study spec TOML")
    return parser


def run(args: argparse.Namespace) -> int:
    print(search_space_json(load_spec(args.spec)))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
