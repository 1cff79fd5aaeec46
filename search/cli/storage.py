"""shrink storage serve --storage URL [--host H] [--port P] [--threads N]: Optuna's gRPC storage proxy in
front of a database, for workers that use ``--storage grpc://H:P``."""

from __future__ import annotations

import argparse
import errno
import signal
import socket
import threading

import optuna

from shrink.search.storage import (
    PROXIED_FORMS,
    StorageError,
    grpc_address,
    grpc_proxy_server,
    journal_path,
    open_storage,
    redact,
)

from ._common import ArgumentParser, int_in, run_command

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 13000  # Optuna's
STOP_GRACE_S = 5  # calls in flight may finish (a commit); then the rest are cancelled


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shrink storage", description="Storage services.")
    actions = parser.add_subparsers(dest="action", required=True, parser_class=ArgumentParser)
    serve = actions.add_parser(
        "serve", help="Optuna's gRPC storage proxy in front of a database (workers: --storage grpc://H:P)"
    )
    serve.add_argument(
        "--storage", required=True, help="the database: sqlite:///FILE or postgresql+psycopg://..."
    )
    serve.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 for other machines: no TLS, no login)",
    )
    serve.add_argument(
        "--port", type=int_in(0, 65_535), default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0: a free one"
    )
    serve.add_argument(
        "--threads", type=int_in(1, 1024), default=10, help="calls served at once (default 10)"
    )
    return parser


def check_port(host: str, port: int) -> None:
    """Refuse a taken port or an address that is not this host's, before the storage is opened."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ValueError(f"--host {host}: {error.strerror}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT is free
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ValueError(
                    f"port {port} on {host} is already in use (pick another with --port)"
                ) from None
            raise ValueError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def check_proxied_url(url: str) -> None:
    """A journal or another proxy cannot be served (Optuna's proxy supports databases only): refused before
    a journal file would be created."""
    if journal_path(url) is not None or grpc_address(url) is not None:
        raise StorageError(f"a gRPC proxy serves a database, not {redact(url)}: {PROXIED_FORMS}")


def client_host(host: str) -> str:
    """The host workers name in ``grpc://HOST:PORT``: this machine's name where the proxy listens on all."""
    return socket.gethostname() if host in ("0.0.0.0", "::", "") else host


def serve(args: argparse.Namespace) -> int:
    check_proxied_url(args.storage)
    check_port(args.host, args.port)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per study created is noise here
    storage = open_storage(args.storage, heartbeat_interval=None)
    stopped = threading.Event()
    received: list[int] = []

    def stop(signum, frame) -> None:
        received.append(signum)
        stopped.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server, port = grpc_proxy_server(storage, args.host, args.port, log, args.threads)
        host = client_host(args.host)
        shown = f"[{host}]" if ":" in host else host
        log(
            f"gRPC storage proxy for {redact(args.storage)} listening on {args.host}:{port} "
            f"(workers: --storage grpc://{shown}:{port})"
        )
        while not stopped.wait(1.0):
            pass
        log(f"gRPC storage proxy stopping ({signal.Signals(received[0]).name})")
        server.stop(STOP_GRACE_S).wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        storage.dispose()
    return 0


def log(line: str) -> None:
    print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    return serve(args)


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
