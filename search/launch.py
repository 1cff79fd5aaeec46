"""Launch one worker process per GPU (``CUDA_VISIBLE_DEVICES``) or N CPU workers, with prefixed logs.

SIGINT/SIGTERM to the launcher are forwarded to every worker (each checkpoints and re-queues its trial);
the launcher's exit code is the first non-zero worker exit code, so a scheduler sees failures.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence


def worker_command(worker_args: Sequence[str], index: int) -> list[str]:
    # -P keeps the working directory off sys.path: our top-level compression/ must not hide the stdlib's.
    isolate = ["-P"] if sys.version_info >= (3, 11) else []
    return [
        sys.executable,
        *isolate,
        "-m",
        "shrink.search.cli",
        "worker",
        *worker_args,
        "--worker-index",
        str(index),
    ]


def _pump(stream, prefix: str) -> None:
    for line in iter(stream.readline, ""):
        sys.stdout.write(f"{prefix} {line}")
        sys.stdout.flush()
    stream.close()


def launch(
    worker_args: Sequence[str], gpus: Sequence[str] | None, n_workers: int, env: dict[str, str] | None = None
) -> int:
    """``env``: extra environment for every worker (secrets such as the storage URL go here, not in argv)."""
    slots = list(gpus) if gpus else [None] * n_workers
    processes: list[subprocess.Popen] = []
    pumps = []
    for index, gpu in enumerate(slots):
        worker_env = dict(os.environ, **(env or {}), PYTHONUNBUFFERED="1")
        if gpu is not None:
            worker_env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        process = subprocess.Popen(
            worker_command(worker_args, index),
            env=worker_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        processes.append(process)
        prefix = f"[gpu{gpu}]" if gpu is not None else f"[w{index}]"
        pump = threading.Thread(target=_pump, args=(process.stdout, prefix), daemon=True)
        pump.start()
        pumps.append(pump)

    def forward(signum, frame):
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [process.wait() for process in processes]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for pump in pumps:
        pump.join(timeout=5)
    failed = [code for code in codes if code != 0]
    print(f"launch: {len(codes)} workers exited with codes {codes}")
    return failed[0] if failed else 0
