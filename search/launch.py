"""Launch one worker process per GPU (``CUDA_VISIBLE_DEVICES``) or N CPU workers, with prefixed logs.

Each worker gets ``OMP_NUM_THREADS`` = ``MKL_NUM_THREADS`` = the launcher's cores // workers (unless
``OMP_NUM_THREADS`` is set already), so K workers do not each start one torch thread per core.

SIGINT/SIGTERM to the launcher are forwarded to every worker (each checkpoints and re-queues its trial);
the launcher's exit code is the first non-zero worker exit code, so a scheduler sees failures.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence

GPU_UUID = re.compile(r"(GPU|MIG)-[0-9A-Za-z][0-9A-Za-z/-]*")


def cuda_device_count() -> int | None:
    """CUDA devices torch sees, or None when unknown: torch absent, or ``CUDA_VISIBLE_DEVICES`` set for the
    launcher (a worker's ``CUDA_VISIBLE_DEVICES`` replaces it and counts physical GPUs, not those)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return None
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    return torch.cuda.device_count()


def parse_gpus(text: str, device_count: int | None = None) -> list[str]:
    """The ids of ``--gpus TEXT``: non-negative integers or GPU UUIDs (``GPU-...``, ``MIG-...``), each once;
    integer ids below ``device_count`` when that is known and > 0. A ValueError names the bad id."""
    ids = [item.strip() for item in text.split(",") if item.strip()]
    if not ids:
        raise ValueError(f"no GPU ids in --gpus {text!r}")
    seen: set[str] = set()
    for gpu in ids:
        if re.fullmatch(r"[0-9]+", gpu):
            key = str(int(gpu))
            if device_count and int(gpu) >= device_count:
                raise ValueError(
                    f"--gpus {text!r}: GPU id {gpu} is out of range: torch sees {device_count} CUDA "
                    f"device{'s' if device_count > 1 else ''} (0..{device_count - 1})"
                )
        elif GPU_UUID.fullmatch(gpu):
            key = gpu
        else:
            raise ValueError(
                f"--gpus {text!r}: GPU id {gpu!r} is neither a non-negative integer nor a GPU UUID "
                "(GPU-... or MIG-...)"
            )
        if key in seen:
            raise ValueError(f"--gpus {text!r}: GPU id {gpu} is listed twice")
        seen.add(key)
    return ids


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask: what SLURM, a cgroup or taskset allots it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def thread_limits(n_workers: int, environ: Mapping[str, str], cores: int | None = None) -> tuple[dict, str]:
    """(what to add to each worker's environment, the line saying the per-worker thread limit).

    torch reads ``OMP_NUM_THREADS`` at import, so a worker whose config leaves ``device.threads`` at 0 runs
    that many intra-op threads. A limit the user set (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``) is kept."""
    workers = f"{n_workers} worker{'s' if n_workers > 1 else ''}"
    if environ.get("OMP_NUM_THREADS"):
        return (
            {},
            f"launch: {workers}, OMP_NUM_THREADS={environ['OMP_NUM_THREADS']} each (from the environment)",
        )
    cores = cores or cpu_cores()
    threads = max(1, cores // n_workers)
    extra = {"OMP_NUM_THREADS": str(threads)}
    if not environ.get("MKL_NUM_THREADS"):
        extra["MKL_NUM_THREADS"] = str(threads)
    each = f"{threads} thread{'s' if threads > 1 else ''} each"
    return extra, f"launch: {workers} on {cores} CPU cores, {each} (OMP_NUM_THREADS; set it to override)"


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
    if not slots:
        raise ValueError("nothing to launch: no GPU ids and no CPU workers")
    base_env = dict(os.environ, **(env or {}))
    threads, note = thread_limits(len(slots), base_env)
    print(note, flush=True)
    processes: list[subprocess.Popen] = []
    pumps = []
    for index, gpu in enumerate(slots):
        worker_env = dict(base_env, **threads, PYTHONUNBUFFERED="1")
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
