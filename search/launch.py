"""Launch worker processes on a node's GPUs (``CUDA_VISIBLE_DEVICES``) or its CPU cores, with prefixed logs.

Where the workers go:

- ``--gpus 0,1 [--workers-per-gpu N]``: N workers on each listed GPU; an id listed twice also runs two
  workers on it. Logs are prefixed ``[gpu0]``, or ``[gpu0.0]``, ``[gpu0.1]`` on a GPU with several workers.
- ``--workers K``: K workers spread round-robin over the CUDA devices the launcher sees (none: K CPU
  workers); logs are prefixed ``[w0]`` .. ``[wK-1]`` either way.

An id counts among the GPUs the launcher sees: started inside a ``CUDA_VISIBLE_DEVICES`` (SLURM, k8s),
``--gpus 0,1`` means that list's first two entries, and each worker's ``CUDA_VISIBLE_DEVICES`` is its entry
(an index or a UUID); a GPU UUID given to ``--gpus`` must then be one of the entries.

Each worker gets ``OMP_NUM_THREADS`` = ``MKL_NUM_THREADS`` = the launcher's cores // workers (unless
``OMP_NUM_THREADS`` is set already), so K workers do not each start one torch thread per core, and
``SHRINK_CODEC_THREADS`` = that same share for its codec thread pool (unless set already).

SIGINT/SIGTERM to the launcher are forwarded to every worker (each checkpoints and re-queues its trial);
the launcher's exit code is the first non-zero worker exit code (128 + N for a worker killed by signal N),
so a scheduler sees failures. A worker killed outright (``kill -9``, the OOM killer) leaves its trial
RUNNING: the launch's other workers wait for it, re-queue it when its heartbeat grace runs out and train it
(:mod:`shrink.search.drain`), so the study still finishes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shrink.compression.codecs import CODEC_THREADS_ENV, default_codec_threads

GPU_UUID = re.compile(r"(GPU|MIG)-[0-9A-Za-z][0-9A-Za-z/-]*")
GPU_INDEX = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Slot:
    """One worker process: its log prefix and, on a GPU, the GPU's id (as ``--gpus`` names it) and the
    worker's ``CUDA_VISIBLE_DEVICES``."""

    prefix: str
    gpu: str | None = None
    device: str | None = None


def cuda_device_count() -> int | None:
    """CUDA devices torch sees (within the launcher's ``CUDA_VISIBLE_DEVICES``), or None without torch.

    ``torch.cuda.device_count`` asks the driver without creating a CUDA context in the launcher."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    return torch.cuda.device_count()


def parent_gpus(visible: str | None) -> list[str] | None:
    """The entries of the launcher's own ``CUDA_VISIBLE_DEVICES`` (None when unset), read as CUDA reads them:
    up to the first entry that is neither an index nor a UUID, so ``""`` and ``-1`` hide every GPU."""
    if visible is None:
        return None
    entries = []
    for entry in (item.strip() for item in visible.split(",")):
        if not (GPU_INDEX.fullmatch(entry) or GPU_UUID.fullmatch(entry)):
            break
        entries.append(entry)
    return entries


def parse_gpus(text: str, device_count: int | None = None, visible: str | None = None) -> list[str]:
    """The ids of ``--gpus TEXT``, integers normalised (``01`` is ``1``), repeats kept: non-negative integers
    or GPU UUIDs (``GPU-...``, ``MIG-...``). ``visible``, the launcher's ``CUDA_VISIBLE_DEVICES``: integers
    index its entries and UUIDs must be among them; without it, integers are below ``device_count`` when that
    is known and > 0. A ValueError names the bad id."""
    ids = [item.strip() for item in text.split(",") if item.strip()]
    if not ids:
        raise ValueError(f"no GPU ids in --gpus {text!r}")
    entries = parent_gpus(visible)
    parent = f"the launcher's CUDA_VISIBLE_DEVICES={visible!r}"
    if entries == []:
        raise ValueError(f"--gpus {text!r}: no GPU is visible: {parent}")
    checked = []
    for gpu in ids:
        if GPU_UUID.fullmatch(gpu):
            if entries is not None and gpu not in entries:
                raise ValueError(f"--gpus {text!r}: GPU {gpu} is not in {parent}")
        elif not GPU_INDEX.fullmatch(gpu):
            raise ValueError(
                f"--gpus {text!r}: GPU id {gpu!r} is neither a non-negative integer nor a GPU UUID "
                "(GPU-... or MIG-...)"
            )
        elif entries is not None and int(gpu) >= len(entries):
            out_of_range = f"{parent} lists {_numbered(len(entries), 'GPU')}"
            raise ValueError(f"--gpus {text!r}: GPU id {gpu} is out of range: {out_of_range}")
        elif entries is None and device_count and int(gpu) >= device_count:
            out_of_range = f"torch sees {_numbered(device_count, 'CUDA device')}"
            raise ValueError(f"--gpus {text!r}: GPU id {gpu} is out of range: {out_of_range}")
        checked.append(gpu if GPU_UUID.fullmatch(gpu) else str(int(gpu)))
    return checked


def _numbered(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count > 1 else ''} (0..{count - 1})"


def gpu_slots(gpus: Sequence[str], per_gpu: int = 1, visible: str | None = None) -> list[Slot]:
    """``per_gpu`` workers on each of ``gpus`` (ids from :func:`parse_gpus`), in order: 0,1 -> 0,0,1,1."""
    ids = [gpu for gpu in gpus for _ in range(per_gpu)]
    entries = parent_gpus(visible)
    devices = [entries[int(gpu)] if entries and GPU_INDEX.fullmatch(gpu) else gpu for gpu in ids]
    return [Slot(*slot) for slot in zip(_gpu_prefixes(ids), ids, devices, strict=True)]


def _gpu_prefixes(ids: Sequence[str]) -> list[str]:
    """``gpu0`` for a GPU's only worker, ``gpu0.0``, ``gpu0.1``, ... for a GPU's several."""
    totals, seen = Counter(ids), Counter()
    prefixes = []
    for gpu in ids:
        prefixes.append(f"gpu{gpu}" if totals[gpu] == 1 else f"gpu{gpu}.{seen[gpu]}")
        seen[gpu] += 1
    return prefixes


def spread_slots(n_workers: int, device_count: int | None, visible: str | None = None) -> list[Slot]:
    """``n_workers`` workers round-robin over the ``device_count`` CUDA devices the launcher sees (the first
    entries of its ``CUDA_VISIBLE_DEVICES``, if set); CPU workers when it sees none."""
    entries = parent_gpus(visible)
    ids = [str(index) for index in range(device_count or 0)]
    devices = ids if entries is None else entries[: len(ids)]
    ids = ids[: len(devices)]
    if not ids:
        return [Slot(f"w{index}") for index in range(n_workers)]
    return [Slot(f"w{index}", ids[index % len(ids)], devices[index % len(ids)]) for index in range(n_workers)]


def placement(slots: Sequence[Slot], visible: str | None) -> str:
    """What the first line says about the GPUs: '' for CPU workers, else e.g. ``GPUs 0,0,1,1 (2 per GPU)``."""
    ids = [slot.gpu for slot in slots if slot.gpu is not None]
    if not ids:
        return ""
    counts = Counter(ids).values()
    per_gpu = f"{max(counts)}" if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
    where = f"GPUs {','.join(ids)} ({per_gpu} per GPU"
    devices = [slot.device for slot in slots if slot.gpu is not None]
    if devices != ids:
        where += f"; devices {','.join(devices)} of CUDA_VISIBLE_DEVICES={visible}"
    return where + ")"


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask: what SLURM, a cgroup or taskset allots it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def thread_limits(
    n_workers: int, environ: Mapping[str, str], cores: int | None = None, gpus: str = ""
) -> tuple[dict, str]:
    """(what to add to each worker's environment, the line saying the per-worker thread limit and, when
    ``gpus`` says which, the workers' GPUs).

    torch reads ``OMP_NUM_THREADS`` at import, so a worker whose config leaves ``device.threads`` at 0 runs
    that many intra-op threads. A limit the user set (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``) is kept."""
    workers = f"{n_workers} worker{'s' if n_workers > 1 else ''}" + (f" on {gpus}" if gpus else "")
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
    where = f"{workers}, {cores} CPU cores" if gpus else f"{workers} on {cores} CPU cores"
    return extra, f"launch: {where}, {each} (OMP_NUM_THREADS; set it to override)"


def codec_threads(n_workers: int, environ: Mapping[str, str], cores: int | None = None) -> dict[str, str]:
    """``SHRINK_CODEC_THREADS`` for each worker: its share of the cores. One the user set is kept, and checked
    here so that a malformed one stops the launch before any worker starts."""
    if environ.get(CODEC_THREADS_ENV, "").strip():
        default_codec_threads(environ)
        return {}
    return {CODEC_THREADS_ENV: str(max(1, (cores or cpu_cores()) // n_workers))}


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
    worker_args: Sequence[str],
    slots: Sequence[Slot],
    env: dict[str, str] | None = None,
    first_index: int = 0,
) -> int:
    """One worker process per slot (:func:`gpu_slots`, :func:`spread_slots`). ``env``: extra environment for
    every worker (secrets such as the storage URL go here, not in argv)."""
    if not slots:
        raise ValueError("nothing to launch: no GPU ids and no CPU workers")
    base_env = dict(os.environ, **(env or {}))
    cores = cpu_cores()
    codec = codec_threads(len(slots), base_env, cores)
    gpus = placement(slots, os.environ.get("CUDA_VISIBLE_DEVICES"))
    threads, note = thread_limits(len(slots), base_env, cores, gpus)
    print(note, flush=True)
    processes: list[subprocess.Popen] = []
    pumps = []
    for index, slot in enumerate(slots):
        worker_env = dict(base_env, **threads, **codec, PYTHONUNBUFFERED="1")
        if slot.device is not None:
            worker_env["CUDA_VISIBLE_DEVICES"] = slot.device
        process = subprocess.Popen(
            worker_command(worker_args, first_index + index),
            env=worker_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        processes.append(process)
        pump = threading.Thread(target=_pump, args=(process.stdout, f"[{slot.prefix}]"), daemon=True)
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
    failed = [exit_status(code) for code in codes if code != 0]
    print(f"launch: {len(codes)} workers exited with codes {codes}")
    return failed[0] if failed else 0


def exit_status(code: int) -> int:
    """A worker's exit code as a shell reports it: Popen's -N for a worker killed by signal N is 128 + N."""
    return 128 - code if code < 0 else code
