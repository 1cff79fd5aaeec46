"""shrink refine --storage URL --study-name N (--pareto | --trials T [T ...]) [--max-trials K]
                [--budget SECONDS] [--child-name NAME]

Creates the child study that retrains the chosen trials at the spec's [refine] fidelity; run it with
``shrink worker`` / ``shrink launch`` like any study. With ``--status`` it prints, for an existing child
study, each refined trial beside its parent and Spearman's rho between their dev gains.
"""

from __future__ import annotations

import argparse

from shrink.search.records import PARENT_STUDY_ATTR
from shrink.search.refine import create_refine_study, rank_agreement
from shrink.search.storage import redact
from shrink.search.study import load_study

from ._common import MAX_COUNT, ArgumentParser, int_in, positive_float, positive_int, run_command


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="shrink refine",
        description="Retrain chosen trials of a search at full fidelity ([refine]) as a child study; each "
        "refined trial is evaluated once on the spec's [test] set.",
    )
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study-name", required=True, help="the search study (or, with --status, its child)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--pareto", action="store_true", help="the search's Pareto front (best, if 1 objective)"
    )
    which.add_argument(
        "--trials", type=int_in(0, MAX_COUNT), nargs="+", metavar="T", help="complete trials by number"
    )
    which.add_argument("--status", action="store_true", help="rank agreement of a refine study's trials")
    parser.add_argument(
        "--budget", type=positive_float, metavar="SECONDS", help="per-trial time budget over [refine]'s"
    )
    parser.add_argument(
        "--max-trials",
        type=positive_int,
        metavar="K",
        help="refine at most K of the chosen trials, evenly spread over their dev rate",
    )
    parser.add_argument("--child-name", help="default: <study-name>-refine")
    return parser


def run(args: argparse.Namespace) -> int:
    study = load_study(args.storage, args.study_name)
    if args.status:
        return print_status(study)
    handle = create_refine_study(
        args.storage, study, args.trials, args.child_name, args.budget, args.max_trials
    )
    budget = handle.spec.spec.budget
    print(
        f"created study {handle.study.study_name!r} in {redact(args.storage)}: {budget.n_trials} trials of "
        f"{args.study_name!r} at epochs={handle.spec.base_config.training.epochs}, "
        f"steps_per_epoch={handle.spec.base_config.training.steps_per_epoch}, "
        f"crop={handle.spec.base_config.training.crop}, "
        f"time budget={handle.spec.base_config.training.time_budget_s}; run it with shrink worker --storage "
        f"{redact(args.storage)} --study-name {handle.study.study_name}"
    )
    return 0


def print_status(study) -> int:
    if PARENT_STUDY_ATTR not in study.user_attrs:
        raise ValueError(f"study {study.study_name!r} is not a refine study (made by shrink refine)")
    agreement = rank_agreement(study)
    print(f"{'parent':>7} {'search gain':>12} {'refined gain':>13}")
    for parent, search, refined in agreement.pairs:
        print(f"{parent:>7} {search:>+12.3f} {refined:>+13.3f}")
    rho = "n/a (needs 3 refined trials)" if agreement.rho is None else f"{agreement.rho:+.3f}"
    print(f"Spearman rho (search-fidelity vs refined dev gain, {len(agreement.pairs)} trials): {rho}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
