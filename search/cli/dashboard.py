"""shrink dashboard --storage URL [--port P] [--run-root DIR]: optuna-dashboard with our artifact store."""

from __future__ import annotations

import argparse

from optuna_dashboard import run_server

from shrink.dashboards.trial_artifacts import artifact_store
from shrink.search.storage import open_storage, redact
from shrink.search.trial_runner import default_run_root

from ._common import ArgumentParser, run_command


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="shrink dashboard", description="optuna-dashboard on loopback, artifacts wired in."
    )
    parser.add_argument("--storage", required=True)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--run-root", help="where the workers kept trial folders (artifacts are in RUN_ROOT/artifacts)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    storage = open_storage(args.storage, heartbeat_interval=None)
    store = artifact_store(args.run_root or default_run_root(args.storage))
    print(f"optuna-dashboard for {redact(args.storage)} on http://127.0.0.1:{args.port}/", flush=True)
    run_server(storage, host="127.0.0.1", port=args.port, artifact_store=store)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
