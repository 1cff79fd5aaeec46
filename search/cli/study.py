"""shrink study create SPEC --storage URL [--study-name N]"""

from __future__ import annotations

import argparse

from shrink.search.spec import load_spec
from shrink.search.storage import redact
from shrink.search.study import create

from ._common import ArgumentParser, add_set_argument, run_command


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shrink study", description="Create a study from a spec.")
    actions = parser.add_subparsers(dest="action", required=True, parser_class=ArgumentParser)
    create_parser = actions.add_parser("create", help="validate SPEC and create the study (nothing on error)")
    create_parser.add_argument("spec", help="study spec TOML, e.g. studies/demo.toml")
    create_parser.add_argument(
        "--storage", required=True, help="sqlite:///FILE, postgresql+psycopg://..., journal:FILE"
    )
    create_parser.add_argument("--study-name", help="default: the spec's name")
    add_set_argument(create_parser, "pruner.name=none")
    return parser


def run(args: argparse.Namespace) -> int:
    handle = create(load_spec(args.spec, args.overrides), args.storage, args.study_name)
    print(
        f"created study {handle.study.study_name!r} in {redact(args.storage)} "
        f"({_objective_text(handle.spec.spec.objective)}, {len(handle.spec.spec.space)} space entries, "
        f"{handle.spec.spec.budget.n_trials} trials)"
    )
    return 0


def _objective_text(objective) -> str:
    """e.g. ``multi objective + decoder MACs/px, at most 50,000 decoder MACs/px``."""
    text = f"{objective.mode} objective"
    if objective.decoder_cost == "objective":
        text += " + decoder MACs/px"
    if objective.max_decoder_macs_per_pixel is not None:
        text += f", at most {objective.max_decoder_macs_per_pixel:,.0f} decoder MACs/px"
    return text


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
