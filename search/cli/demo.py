"""shrink demo: the main job, demo-sized, end to end on the sample photos. A SQLite study from
studies/demo.toml is run to its budget and its Pareto front printed beside the dev JPEG curve; a few front
members are refined at the spec's [refine] fidelity (``shrink refine``), tested once on the held-out [test]
photos and exported as one codec family (``shrink export --family``); a report is written for each study."""

from __future__ import annotations

import argparse
from pathlib import Path

import optuna

from shrink.dashboards.report import ReportOptions, write_report
from shrink.dashboards.study_info import storage_roots
from shrink.search.export import chosen_trials, export_family, export_trial
from shrink.search.refine import create_refine_study
from shrink.search.results import format_front, front_rows
from shrink.search.spec import ResolvedSpec, load_spec
from shrink.search.storage import StorageError
from shrink.search.study import StudyHandle, attach, create
from shrink.search.trial_runner import default_run_root
from shrink.search.worker import Worker, trials_used

from ._common import ArgumentParser, add_set_argument, positive_int, run_command
from ._hooks import dashboard_hooks
from .export import print_family
from .refine import print_status


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shrink demo", description="Run the demo study end to end.")
    parser.add_argument("--spec", default="studies/demo.toml")
    parser.add_argument("--out", default="runs/demo", help="study.db, runs, bundles, the family go here")
    parser.add_argument("--study-name", default=None, help="default: the spec's name")
    add_set_argument(parser, "budget.n_trials=4")
    parser.add_argument(
        "--refine",
        type=positive_int,
        default=3,
        metavar="K",
        help="front members refined, tested and exported as a family, spread over rate (default 3)",
    )
    parser.add_argument("--no-refine", action="store_true", help="stop after the search")
    parser.add_argument("--no-report", action="store_true", help="skip writing the reports")
    return parser


def run_study(url: str, handle: StudyHandle) -> None:
    """Run the study's workers to its budget (a finished study: nothing to run)."""
    budget = handle.spec.spec.budget.n_trials
    progress = lambda trial: print(f"-- {trials_used(handle.study)}/{budget} trials used")  # noqa: E731
    run_root = default_run_root(url)
    Worker(handle, run_root, log=print, **dashboard_hooks(handle, run_root, then=progress)).run()


def search(args: argparse.Namespace, spec: ResolvedSpec, url: str, name: str) -> StudyHandle:
    try:
        handle = attach(url, name, spec)
        print(f"continuing study {name!r} in {url}")
    except StorageError:
        create(spec, url, name)
        handle = attach(url, name, spec)
        print(f"created study {name!r} in {url}")
    run_study(url, handle)
    rows = front_rows(handle.study, handle.dev_jpeg)
    print(f"\nPareto front ({len(rows)} trials) beside the dev JPEG curve at the same bpp:")
    print(format_front(rows))
    if rows:
        best = max(rows, key=lambda row: row.gain_db)
        trial = handle.study.get_trials(deepcopy=False)[best.number]
        bundle = export_trial(handle.study, trial, Path(args.out) / "bundles", overwrite=True)
        print(f"\nbest bundle (trial {best.number}, {best.gain_db:+.3f} dB over JPEG): {bundle}")
    return handle


def refine(args: argparse.Namespace, url: str, parent: StudyHandle) -> StudyHandle:
    """Refine ``--refine`` front members as the child study, run it, and export it as a codec family."""
    name = f"{parent.study.study_name}-refine"
    try:
        handle = attach(url, name)
        print(f"\ncontinuing study {name!r}")
    except StorageError:
        create_refine_study(url, parent.study, child_name=name, max_trials=args.refine)
        handle = attach(url, name)
        print(f"\ncreated study {name!r}: the front refined at [refine], tested on [test]")
    run_study(url, handle)
    print_status(handle.study)
    test = handle.spec.spec.test.data
    family_dir = Path(args.out) / "family"
    trials = chosen_trials(handle.study, None)
    family = export_family(handle.study, trials, family_dir, None, [], overwrite=True)
    print(f"\ncodec family {family_dir}: {len(family.members)} refined members, tested on {test}")
    print_family(family, test)
    print(f"use it:  .venv/bin/shrink compress PHOTO --model {family_dir} --bpp 0.5 -o PHOTO.jpg")
    return handle


def write_study_report(url: str, study: optuna.Study, path: Path, bundles: Path | None) -> None:
    options = ReportOptions(
        bundles=bundles,
        cache=path.parent / "report.html.cache.json",  # one cache: the reports share the dev baselines
        roots=storage_roots(url),
        storage_label=url,
    )
    print(f"report: {write_report(study, path, options)}")


def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, args.overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{out / 'study.db'}"
    name = args.study_name or spec.spec.name
    parent = search(args, spec, url, name)
    reports = [(parent.study, out / "report.html", out / "bundles" if (out / "bundles").is_dir() else None)]
    if not args.no_refine:
        child = refine(args, url, parent)
        reports.append((child.study, out / "refine-report.html", None))
    if not args.no_report:
        print()
        for study, path, bundles in reports:
            write_study_report(url, study, path, bundles)
    print(f"\nlook at the studies:  .venv/bin/shrink dashboard --storage {url}")
    print(f"                      (or plain .venv/bin/optuna-dashboard {url}, without the trials' crops)")
    print(f"                      .venv/bin/optuna trials --storage {url} --study-name {name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
