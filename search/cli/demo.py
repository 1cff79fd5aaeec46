"""shrink demo: the main job. A SQLite study from studies/demo.toml on the sample photos, run to its budget,
its Pareto front printed beside the dev JPEG curve, the best bundle exported, and how to look at it all."""

from __future__ import annotations

import argparse
from pathlib import Path

from shrink.dashboards.report import ReportOptions, write_report
from shrink.dashboards.study_info import storage_roots
from shrink.search.export import export_trial
from shrink.search.results import format_front, front_rows
from shrink.search.spec import load_spec
from shrink.search.storage import StorageError
from shrink.search.study import attach, create
from shrink.search.trial_runner import default_run_root
from shrink.search.worker import Worker, trials_used

from ._common import ArgumentParser, add_set_argument, run_command
from ._hooks import dashboard_hooks


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shrink demo", description="Run the demo study end to end.")
    parser.add_argument("--spec", default="studies/demo.toml")
    parser.add_argument("--out", default="runs/demo", help="study.db, trial runs and bundles go here")
    parser.add_argument("--study-name", default=None, help="default: the spec's name")
    add_set_argument(parser, "budget.n_trials=4")
    parser.add_argument("--no-report", action="store_true", help="skip writing OUT/report.html")
    return parser


def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, args.overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{out / 'study.db'}"
    name = args.study_name or spec.spec.name
    try:
        handle = attach(url, name, spec)
        print(f"continuing study {name!r} in {url}")
    except StorageError:
        create(spec, url, name)
        handle = attach(url, name, spec)
        print(f"created study {name!r} in {url}")
    budget = spec.spec.budget.n_trials
    progress = lambda trial: print(f"-- {trials_used(handle.study)}/{budget} trials used")  # noqa: E731
    run_root = default_run_root(url)
    Worker(handle, run_root, log=print, **dashboard_hooks(handle, run_root, then=progress)).run()

    rows = front_rows(handle.study, handle.dev_jpeg)
    print(f"\nPareto front ({len(rows)} trials) beside the dev JPEG curve at the same bpp:")
    print(format_front(rows))
    if rows:
        best = max(rows, key=lambda row: row.gain_db)
        trial = handle.study.get_trials(deepcopy=False)[best.trial]
        bundle = export_trial(handle.study, trial, out / "bundles", overwrite=True)
        print(f"\nbest bundle (trial {best.trial}, {best.gain_db:+.3f} dB over JPEG): {bundle}")
    if not args.no_report:
        options = ReportOptions(
            bundles=out / "bundles" if rows else None,
            cache=out / "report.html.cache.json",
            roots=storage_roots(url),
            storage_label=url,
        )
        print(f"\nreport: {write_report(handle.study, out / 'report.html', options)}")
    print(f"\nlook at the study:  .venv/bin/shrink dashboard --storage {url}")
    print(f"                    (or plain .venv/bin/optuna-dashboard {url}, without the trials' crops)")
    print(f"                    .venv/bin/optuna trials --storage {url} --study-name {name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
