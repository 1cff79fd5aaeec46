"""shrink dashboard --storage URL [--port P] [--run-root DIR]: optuna-dashboard with our artifact store."""

from __future__ import annotations

import argparse
import errno
import socket

from optuna_dashboard import run_server

from shrink.dashboards.trial_artifacts import artifact_store
from shrink.search.storage import open_storage, redact
from shrink.search.trial_runner import default_run_root

from ._common import ArgumentParser, int_in, run_command

HOST = "127.0.0.1"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="shrink dashboard", description="optuna-dashboard on loopback, artifacts wired in."
    )
    parser.add_argument("--storage", required=True)
    parser.add_argument("--port", type=int_in(1, 65_535), default=8080)
    parser.add_argument(
        "--run-root", help="where the workers kept trial folders (artifacts are in RUN_ROOT/artifacts)"
    )
    return parser


def port_error(port: int, error: OSError) -> ValueError:
    if error.errno == errno.EADDRINUSE:
        return ValueError(f"port {port} on {HOST} is already in use (pick another with --port)")
    return ValueError(f"port {port} on {HOST}: {error.strerror or error}")


def check_port(port: int) -> None:
    """Refuse a port out of range or taken by another process, before the storage is opened."""
    if not 1 <= port <= 65535:
        raise ValueError(f"--port {port}: must be in 1..65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is free
        try:
            probe.bind((HOST, port))
        except OSError as error:
            raise port_error(port, error) from None


def run(args: argparse.Namespace) -> int:
    check_port(args.port)
    storage = open_storage(args.storage, heartbeat_interval=None)
    store = artifact_store(args.run_root or default_run_root(args.storage))
    print(f"optuna-dashboard for {redact(args.storage)} on http://{HOST}:{args.port}/", flush=True)
    try:
        run_server(storage, host=HOST, port=args.port, artifact_store=store)
    except OSError as error:  # taken between the check and the server's bind
        if error.errno != errno.EADDRINUSE:
            raise
        raise port_error(args.port, error) from None
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
