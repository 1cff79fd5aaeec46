"""Scale, simulated: hundreds of workers and thousands of trials through shrink's real ask/report/prune/tell.

Each simulated worker is a real :class:`shrink.search.worker.Worker` (its own ``attach``: its own storage,
engine and connections, its own sampler and pruner built from the study spec) running on a thread; workers
are spread over ``--processes`` processes (threads, not processes, because 256 imports of torch do not fit
in memory; where they fit, one worker per process, as real workers run: threads share a heap, and the full
garbage collection Optuna makes after each trial then walks every worker's cache). Only the training is
replaced: :class:`StubTrainer` stands in for the trainer inside the real
:class:`~shrink.search.trial_runner.TrialRunner`, sleeps ``--epoch-s`` per epoch and hands the runner a
synthetic learning curve (bpp from the sampled JPEG quality, MS-SSIM rising with the epoch), so the per-epoch
ownership check, the epoch record, the multi-objective pruner and the tell all run as in a real search.
The Worker's signal handling is left out on threads (Python allows handlers in the main thread only).

What it measures, per trial, on the worker's thread (wrappers installed in the worker processes only):

- ask: ``Study.ask`` (claiming a ticket, the sampler's relative sampling) + shrink's ``suggest`` (the
  independent sampling), and the sampler's share of it (a delegating sampler times every sampler call);
- report: each epoch's callback (the ownership read, the epoch record, the pruner's decision with the
  study's curves);
- tell: Optuna's ``_tell_with_warning`` (private: the tell ``optimize`` makes);
- overhead: the worker loop per trial (the budget check, ask, the runner's bookkeeping, reports, tell, the
  worker's summary read) minus the stub's sleeps and minus the sampler: shrink's own cost per trial.

At 100 / 1,000 / 10,000 completed trials (each mark: the trials completed in (0.9 M, M], at least the last
50) it prints p50/p99 of each, the sampler's share of ask, trials per second in that window, and the database
connections held (``pg_stat_activity`` rows of the study's database, sampled every 0.5 s; the peak over the
window). At the end: exact budget (one COMPLETE or PRUNED trial per ticket, nothing RUNNING or WAITING),
duplicate tickets (a ticket with two finished trials) and errors (FAIL trials, worker exceptions, retries
given up).

    nice -n 19 .venv/bin/python benchmarks/load.py --workers 16,64,256 --trials 1000 \
        [--storages postgresql,grpc] [--postgres URL] [--epochs 4] [--epoch-s 0.25] [--processes 4]
        [--sampler tpe] [--pruner pareto-halving] [--time-limit S] [--ticket-window K]
    nice -n 19 .venv/bin/python benchmarks/load.py --read-cost 100,1000,10000   # one read vs tickets
    .venv/bin/python benchmarks/load.py --judge-cost 100,1000,10000   # one pareto-halving decision vs peers

PostgreSQL: ``--postgres URL``, else a private server this script starts (root: as the ``postgres`` user;
Debian's binaries; ``max_connections`` = 4 x workers + 50) and removes afterwards. ``grpc``: ``shrink storage
serve`` in front of that server (skipped with a line while the command does not exist). ``sqlite``: a file
in a temporary folder. Exit code 1 when a configuration missed its budget, duplicated a ticket or erred.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

URL_ENV = "SHRINK_LOAD_STORAGE"
MARKS = (100, 1_000, 10_000)


# ---------------------------------------------------------------- the study


def write_images(folder: Path) -> Path:
    """Two 176 px photo-like PNGs (MS-SSIM needs sides > 160): the dev set the study's JPEG curve reads."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(2):
        coarse = rng.uniform(0, 255, size=(13, 13, 3)).astype(np.uint8)
        Image.fromarray(coarse).resize((176, 176), Image.BICUBIC).save(folder / f"img{index}.png")
    return folder


def write_spec(path: Path, images: Path, args: argparse.Namespace, n_trials: int) -> Path:
    path.write_text(
        f"""
name = "load"
seed = 1

[base]
seed = 1
device = {{ device = "cpu", threads = 1 }}
model = {{ ratio = 2, comcnn = {{ depth = 3, width = 8 }}, reccnn = {{ depth = 3, width = 8 }} }}
codec = {{ threads = 1 }}
data = {{ dev_qualities = [50] }}

[data]
train = "{images}"
dev = "{images}"
dev_max_images = 1

[budget]
n_trials = {n_trials}
epochs = {args.epochs}
steps_per_epoch = 1
crop = 32
batch_size = 1

[objective]
mode = "multi"

[pruner]
name = "{args.pruner}"

[sampler]
name = "{args.sampler}"

[space."codec.quality"]
type = "int"
low = 10
high = 95

[space."model.reccnn.width"]
type = "categorical"
choices = [8, 12, 16]

[space."model.comcnn.depth"]
type = "int"
low = 2
high = 4
"""
    )
    return path


# ---------------------------------------------------------------- the stub trainer


@dataclass
class StubRecord:
    """The fields of an EpochRecord that the trial runner and EpochSummary read."""

    epoch: int
    step: int
    seconds: float
    dev_bpp: float
    dev_msssim: float
    dev_msssim_db: float
    dev_psnr: float
    dev_gain_db: float
    dev_rate_change: float | None
    rolled_back: bool = False
    com_baseline_gain_db: float | None = None
    partial: bool = False
    dev_points: list = field(default_factory=list)

    def score(self, judge: str) -> float:
        return self.dev_gain_db if judge != "rate" else -(self.dev_rate_change or 0.0)


class StubTrainer:
    """The trainer's interface as TrialRunner uses it; ``run()`` sleeps per epoch and reports a curve."""

    epoch_s = 0.25
    on_report = None  # set per process: called with the seconds each callback took

    def __init__(self, config, out_dir, callback=None, log=print, dev_jpeg=None):
        import torch

        self.config, self.out_dir, self.callback = config, Path(out_dir), callback
        self.device = torch.device("cpu")
        self.total_steps = config.training.epochs * config.training.steps_per_epoch
        self.step, self.elapsed_before, self.history = 0, 0.0, []
        self.stopped = False
        quality = config.codec.quality or 50
        width = config.model.reccnn.width
        self.rng = np.random.default_rng(abs(hash((str(out_dir), quality))) % 2**32)
        self.bpp = 0.1 + 0.02 * quality * (1 + 0.05 * self.rng.standard_normal())
        self.ceiling = 12 + 8 * math.log(self.bpp) + 0.1 * width + self.rng.normal(0, 0.5)

    def request_stop(self) -> None:
        self.stopped = True

    def resume(self, path) -> None:  # the stub keeps no checkpoint
        pass

    def run(self) -> None:
        for epoch in range(1, self.config.training.epochs + 1):
            if self.stopped:
                return
            time.sleep(self.epoch_s)
            self.elapsed_before += self.epoch_s
            self.step = epoch * self.config.training.steps_per_epoch
            db = self.ceiling * (1 - math.exp(-epoch / 1.5)) + self.rng.normal(0, 0.05)
            gain = db - (10 + 8 * math.log(self.bpp))
            record = StubRecord(
                epoch=epoch,
                step=self.step,
                seconds=self.epoch_s,
                dev_bpp=self.bpp,
                dev_msssim=1 - 10 ** (-db / 10),
                dev_msssim_db=db,
                dev_psnr=20 + db,
                dev_gain_db=gain,
                dev_rate_change=-gain / 20,
            )
            self.history.append(record)
            started = time.perf_counter()
            try:
                self.callback(record, self)
            finally:
                StubTrainer.on_report(time.perf_counter() - started)


# ---------------------------------------------------------------- a worker process: threads of Workers


class Probe(threading.local):
    """The running trial's measurements on this thread."""

    record: dict | None = None
    phase: str = "other"


PROBE = Probe()


def add(key: str, seconds: float) -> None:
    if PROBE.record is not None:
        PROBE.record[key] = PROBE.record.get(key, 0.0) + seconds


def timed(function, key: str, phase: str):
    def wrapper(*args, **kwargs):
        outer, PROBE.phase = PROBE.phase, phase
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            add(key, time.perf_counter() - started)
            PROBE.phase = outer

    return wrapper


def timed_sampler(inner):
    """A sampler delegating to ``inner`` that adds each call's time to the trial's sampler time (by phase)."""
    import optuna

    class TimedSampler(optuna.samplers.BaseSampler):
        def __getattr__(self, name):  # attributes the study or Optuna's internals read (e.g. _rng)
            return getattr(inner, name)

        def _timed(self, name, *args, **kwargs):
            started = time.perf_counter()
            try:
                return getattr(inner, name)(*args, **kwargs)
            finally:
                add(f"sampler_{PROBE.phase}_s", time.perf_counter() - started)

        def infer_relative_search_space(self, study, trial):
            return self._timed("infer_relative_search_space", study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._timed("sample_relative", study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._timed("sample_independent", study, trial, param_name, param_distribution)

        def before_trial(self, study, trial):
            return self._timed("before_trial", study, trial)

        def after_trial(self, study, trial, state, values):
            return self._timed("after_trial", study, trial, state, values)

        def reseed_rng(self):
            inner.reseed_rng()

    return TimedSampler()


def instrument() -> None:
    """Wrap, in this worker process, the calls each phase is timed by (see the module's docstring)."""
    import optuna
    import optuna.study._optimize as optimize

    from shrink.search import trial_runner

    optuna.study.Study.ask = timed(optuna.study.Study.ask, "ask_s", "ask")
    trial_runner.suggest = timed(trial_runner.suggest, "ask_s", "ask")
    optimize._tell_with_warning = timed(optimize._tell_with_warning, "tell_s", "tell")
    trial_runner.Trainer = StubTrainer
    StubTrainer.on_report = lambda seconds: (
        PROBE.record is not None and PROBE.record["report_s"].append(seconds)
    )


def worker_process(args: argparse.Namespace) -> int:
    """``--child``: ``--threads`` Workers on threads; one JSON line per trial to ``--records``."""
    import optuna

    from shrink.search.study import attach
    from shrink.search.worker import Worker

    instrument()
    StubTrainer.epoch_s = args.epoch_s
    url = os.environ[URL_ENV]
    records: list[dict] = []
    problems: list[str] = []
    lock = threading.Lock()

    class NoSignals:  # Worker's SignalStop installs handlers: main thread only
        signal = None

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    class TimedWorker(Worker):
        last_end = 0.0

        def _one_trial(self, result):
            PROBE.record = {"report_s": [], "start": time.time()}
            started = time.perf_counter()
            before = set(result.trials)
            try:
                return super()._one_trial(result)
            finally:
                record, PROBE.record = PROBE.record, None
                end = time.perf_counter()
                record["loop_s"] = end - (self.last_end or started)
                self.last_end = end
                new = [n for n in result.trials if n not in before]
                if new:
                    record.update(number=new[0], state=result.trials[new[0]], end=time.time())
                    with lock:
                        records.append(record)

    def log_for(index):
        def log(text: str) -> None:
            if "giving up" in text or "Traceback" in text or " FAIL:" in text:
                with lock:
                    problems.append(f"[w{index}] {text}")

        return log

    def one(index: int) -> None:
        try:
            handle = attach(url, args.study, sampler_seed_offset=index)
            handle.study.sampler = timed_sampler(handle.study.sampler)
            worker = TimedWorker(handle, args.run_root, log=log_for(index))
            worker.stop = NoSignals()
            worker.run(timeout=args.time_limit)
            worker.storage.dispose()
        except Exception as error:  # an error the worker did not survive
            with lock:
                problems.append(f"[w{index}] {type(error).__name__}: {error}")

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    threads = [
        threading.Thread(target=one, args=(args.first_index + i,), daemon=True) for i in range(args.threads)
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.02)  # the attaches do not all land at once
    for thread in threads:
        thread.join()
    with open(args.records, "w") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
        for problem in problems:
            out.write(json.dumps({"problem": problem}) + "\n")
    return 0


# ---------------------------------------------------------------- the database


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (Debian's binaries; as root, owned by ``postgres``)."""

    def __init__(self, max_connections: int):
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not found:
            raise RuntimeError("no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)")
        self.bin = found[-1].parent
        self.folder = Path(tempfile.mkdtemp(prefix="shrink-load-pg-"))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.password = secrets.token_hex(12)
        self.url = f"postgresql+psycopg://shrink:{self.password}@127.0.0.1:{self.port}/shrink"
        if os.getuid() == 0:
            shutil.chown(self.folder, "postgres")
        data = self.folder / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "--locale=C", "-E", "UTF8")  # fmt: skip
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nunix_socket_directories = '{self.folder}'\n"
                f"max_connections = {max_connections}\nfsync = off\nsynchronous_commit = off\n"
                "full_page_writes = off\nshared_buffers = 256MB\n"
            )
        self._run("pg_ctl", "-D", str(data), "-l", str(self.folder / "server.log"), "-w", "-t", "60",
                  "-o", f"-p {self.port}", "start")  # fmt: skip
        sql = f"CREATE ROLE shrink LOGIN PASSWORD '{self.password}';\nCREATE DATABASE shrink OWNER shrink;\n"
        self._run("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.folder), "-p", str(self.port),
                  "-U", "postgres", input=sql)  # fmt: skip

    def _run(self, tool: str, *arguments: str, input: str | None = None) -> None:
        command = [str(self.bin / tool), *arguments]
        if os.getuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, cwd="/", check=True, input=input, text=True, capture_output=True, timeout=120)

    def close(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def pg_connect(url: str):
    import psycopg
    import sqlalchemy

    parsed = sqlalchemy.engine.make_url(url)
    return psycopg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, password=parsed.password,
        dbname=parsed.database, connect_timeout=5, autocommit=True,
    )  # fmt: skip


class Monitor:
    """Samples the database's connections every ``period`` seconds on a thread."""

    def __init__(self, pg_url: str, period: float = 0.5):
        self.pg_url, self.period = pg_url, period
        self.samples: list[tuple[float, int]] = []  # (time, connections)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        connection = pg_connect(self.pg_url)
        while not self.done.wait(self.period):
            try:
                connections = connection.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                ).fetchone()[0]
                self.samples.append((time.time(), connections))
            except Exception:  # a sample lost is not a result lost
                pass
        connection.close()

    def connections(self, start: float, end: float) -> int | None:
        values = [c for t, c in self.samples if start <= t <= end]
        return max(values) if values else None


# ---------------------------------------------------------------- one configuration


@dataclass
class Outcome:
    storage: str
    workers: int
    trials: int
    rows: list[str]
    finished: int = 0
    dup: int = 0
    left: int = 0
    errors: int = 0
    problems: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.finished == self.trials and self.dup == 0 and self.left == 0 and self.errors == 0


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def ms(value: float) -> str:
    return f"{1000 * value:.0f}" if value >= 0.0095 else f"{1000 * value:.1f}"


def table_rows(records: list[dict], monitor: Monitor | None, total: int, epoch_s: float) -> list[str]:
    records = sorted(records, key=lambda r: r["end"])
    rows = []
    marks = [m for m in MARKS if m <= len(records)]
    if records and len(records) not in marks and len(records) < MARKS[0]:
        marks.append(len(records))  # a short run: one row over all its trials
    for mark in marks:
        low = max(0, min(mark - 50, int(0.9 * mark)))
        window = records[low:mark]
        ask = [r.get("ask_s", 0.0) for r in window]
        sampler_ask = sum(r.get("sampler_ask_s", 0.0) for r in window)
        tell = [r.get("tell_s", 0.0) for r in window]
        report = [s for r in window for s in r["report_s"]]
        sampler = [sum(v for k, v in r.items() if k.startswith("sampler_")) for r in window]
        overhead = [
            r["loop_s"] - epoch_s * len(r["report_s"]) - s for r, s in zip(window, sampler, strict=True)
        ]
        since = records[low - 1]["end"] if low > 0 else min(r["start"] for r in window)
        span = window[-1]["end"] - since
        rate = len(window) / span if span > 0 else float("nan")
        conns = monitor.connections(window[0]["end"], window[-1]["end"]) if monitor else None
        rows.append(
            f"{mark:>6} {ms(percentile(ask, 50)):>7} {ms(percentile(ask, 99)):>7} "
            f"{100 * sampler_ask / max(sum(ask), 1e-9):>8.0f}% {ms(percentile(tell, 50)):>7} "
            f"{ms(percentile(tell, 99)):>7} {ms(percentile(report, 50)):>8} {ms(percentile(report, 99)):>8} "
            f"{ms(statistics.median(overhead)):>10} {rate:>8.2f} {'-' if conns is None else conns:>6}"
        )
    return rows


HEADER = (
    "storage     workers trials  ask50ms ask99ms sampler%  tell50  tell99 report50 report99 "
    "overhead50 trials/s  conns"
)


def check_study(url: str, study_name: str, n_trials: int) -> tuple[int, int, int, int]:
    """(tickets finished once, tickets finished twice or more, trials left RUNNING/WAITING, FAIL trials
    not retried)."""
    import optuna
    from optuna.trial import TrialState

    from shrink.search.records import TICKET_ATTR
    from shrink.search.storage import open_storage

    storage = open_storage(url, heartbeat_interval=None)
    try:
        trials = optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
    finally:
        storage.dispose()
    done = Counter(
        t.system_attrs.get(TICKET_ATTR) for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    )
    left = sum(1 for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING))
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    unretried_fail = sum(1 for t in trials if t.state == TrialState.FAIL and t.number not in retried)
    return len(done), sum(1 for c in done.values() if c > 1), left, unretried_fail


def run_configuration(
    args: argparse.Namespace, storage: str, url: str, pg_url: str | None, workers: int, n_trials: int
) -> Outcome:
    from shrink.search.budget import TICKET_WINDOW
    from shrink.search.spec import load_spec
    from shrink.search.study import create

    root = Path(tempfile.mkdtemp(prefix="shrink-load-"))
    name = f"load-{uuid.uuid4().hex[:8]}"
    try:
        images = write_images(root / "images")
        spec = load_spec(write_spec(root / "load.toml", images, args, n_trials))
        create(spec, url, name, ticket_window=args.ticket_window or TICKET_WINDOW)
        monitor = Monitor(pg_url) if pg_url else None
        if monitor:
            monitor.thread.start()
        processes = min(args.processes, workers)
        per = [workers // processes + (1 if i < workers % processes else 0) for i in range(processes)]
        children = []
        started = time.time()
        first = 0
        for index, threads in enumerate(per):
            records = root / f"records-{index}.jsonl"
            command = [sys.executable, __file__, "--child", "--threads", str(threads), "--first-index",
                       str(first), "--study", name, "--records", str(records), "--run-root",
                       str(root / "runs"), "--epoch-s", str(args.epoch_s)]  # fmt: skip
            if args.time_limit:
                command += ["--time-limit", str(args.time_limit)]
            env = dict(os.environ, **{URL_ENV: url}, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            log = (root / f"child-{index}.log").open("w")
            children.append(
                (subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), records)
            )
            first += threads
        codes = [child.wait() for child, _ in children]
        wall = time.time() - started
        if monitor:
            monitor.done.set()
            monitor.thread.join()
        records, problems = [], []
        for index, (_, path) in enumerate(children):
            if path.is_file():
                for line in path.read_text().splitlines():
                    entry = json.loads(line)
                    (problems.append(entry["problem"]) if "problem" in entry else records.append(entry))
            if codes[index] != 0:
                problems.append(f"process {index} exited {codes[index]}: "
                                + (root / f"child-{index}.log").read_text()[-800:])  # fmt: skip
        finished, dup, left, failed = check_study(url, name, n_trials)
        outcome = Outcome(storage, workers, n_trials, table_rows(records, monitor, n_trials, args.epoch_s))
        outcome.finished, outcome.dup, outcome.left = finished, dup, left
        outcome.errors = failed + len(problems)
        outcome.problems, outcome.wall_s = problems, wall
        return outcome
    finally:
        shutil.rmtree(root, ignore_errors=True)


def read_cost(url: str, sizes: list[int]) -> None:
    """``--read-cost N,...``: what one read of a worker's study costs with N WAITING tickets (the study as
    ``study create`` leaves it): issuing them, then ``get_trials(states=(WAITING,))`` through a fresh
    worker storage (Optuna's cache: the first read, then the best of 3 repeats, each re-reading every
    unfinished trial), and the same read uncached (``RDBStorage``, filtered in SQL)."""
    import optuna
    from optuna.trial import TrialState

    from shrink.search.budget import issue_tickets
    from shrink.search.storage import open_storage

    print("tickets  issue_s  cached_first_s  cached_repeat_s  uncached_s")
    for size in sizes:
        name = f"read-{uuid.uuid4().hex[:8]}"
        owner = open_storage(url, heartbeat_interval=None)
        study = optuna.create_study(storage=owner, study_name=name, directions=["minimize", "maximize"])
        started = time.perf_counter()
        issue_tickets(study, size)
        issued = time.perf_counter() - started
        reader = open_storage(url)
        loaded = optuna.load_study(study_name=name, storage=reader)
        times = []
        for _ in range(4):
            started = time.perf_counter()
            loaded.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            times.append(time.perf_counter() - started)
        started = time.perf_counter()
        reader.rdb.get_all_trials(loaded._study_id, deepcopy=False, states=(TrialState.WAITING,))
        uncached = time.perf_counter() - started
        print(
            f"{size:>7} {issued:>8.2f} {times[0]:>15.3f} {min(times[1:]):>16.3f} {uncached:>11.3f}",
            flush=True,
        )
        optuna.delete_study(study_name=name, storage=owner)
        owner.dispose()
        reader.dispose()


def pairwise_fronts(points, rate_tolerance: float) -> list[list[int]]:
    """The non-dominated sorting shrink used before (every pair compared once, then fronts peeled): O(n^2)."""
    from shrink.search.pruning import _dominates

    count = len(points)
    dominated_by, dominates = [0] * count, [[] for _ in range(count)]
    for i in range(count):
        for j in range(i + 1, count):
            if _dominates(points[i], points[j], rate_tolerance):
                dominates[i].append(j)
                dominated_by[j] += 1
            elif _dominates(points[j], points[i], rate_tolerance):
                dominates[j].append(i)
                dominated_by[i] += 1
    fronts, current = [], [i for i in range(count) if dominated_by[i] == 0]
    while current:
        fronts.append(current)
        following = []
        for i in current:
            for j in dominates[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    following.append(j)
        current = sorted(following)
    return fronts


def judge_cost(sizes: list[int]) -> None:
    """``--judge-cost N,...``: what pareto-halving's decision at a rung costs among N peers (every report at a
    rung epoch makes one), and within it the non-dominated sorting: shrink's (O(n log n)) against the one it
    replaced (:func:`pairwise_fronts`, O(n^2)), on one synthetic rung (bpp rising with the sampled quality,
    MS-SSIM too, with noise), with a check that both give the same fronts."""
    from shrink.search.pruning import EpochPoint, ParetoRankPruner, non_dominated_fronts

    tolerance = 0.02
    print("peers  fronts  decide_s  sort_s  pairwise_sort_s  ratio  same_fronts")
    rng = np.random.default_rng(0)
    for size in sizes:
        quality = rng.uniform(10, 95, size)
        bpp = 0.1 + quality / 50 + rng.normal(0, 0.05, size)
        msssim = 0.9 + quality / 1000 + rng.normal(0, 0.02, size)
        pairs = list(zip(bpp.tolist(), msssim.tolist(), strict=True))
        curves = {n: [EpochPoint(1, b, m, 0.0)] for n, (b, m) in enumerate(pairs)}
        started = time.perf_counter()
        ParetoRankPruner(rate_tolerance=tolerance).decide(0, curves)
        decide = time.perf_counter() - started
        points = [(b, -m) for b, m in pairs]
        started = time.perf_counter()
        fronts = non_dominated_fronts(points, tolerance)
        fast = time.perf_counter() - started
        started = time.perf_counter()
        reference = pairwise_fronts(points, tolerance)
        slow = time.perf_counter() - started
        same = "yes" if reference == fronts else "NO"
        timing = f"{decide:>9.4f} {fast:>7.4f} {slow:>16.3f} {slow / fast:>6.0f}"
        print(f"{size:>5} {len(fronts):>7} {timing}  {same}", flush=True)


def grpc_proxy(pg_url: str) -> tuple[subprocess.Popen | None, str | None]:
    """``shrink storage serve`` in front of ``pg_url``; (None, why) while the command does not exist."""
    shrink = Path(sys.executable).parent / "shrink"
    probe = subprocess.run([str(shrink), "storage", "serve", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None, "`shrink storage serve` is not available"
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    command = [str(shrink), "storage", "serve", "--host", "127.0.0.1", "--port", str(port)]
    env = dict(os.environ, SHRINK_STORAGE=pg_url)
    server = subprocess.Popen(command + ["--storage", pg_url], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return server, f"grpc://127.0.0.1:{port}"
        time.sleep(0.5)
    server.kill()
    return None, "the gRPC proxy did not start listening"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="16,64,256", help="comma-separated worker counts")
    parser.add_argument("--trials", default="1000", help="comma-separated budgets (one study each)")
    parser.add_argument("--storages", default="postgresql", help="postgresql, grpc, sqlite")
    parser.add_argument("--postgres", help="a PostgreSQL URL (default: a private server)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--epoch-s", type=float, default=0.25, help="the stub's seconds per epoch")
    parser.add_argument("--processes", type=int, default=4, help="worker processes the threads spread over")
    parser.add_argument("--sampler", default="tpe")
    parser.add_argument("--pruner", default="pareto-halving")
    parser.add_argument("--time-limit", type=float, help="workers start no trial after this many seconds")
    parser.add_argument(
        "--ticket-window",
        type=int,
        help="the study's ticket window (default: search/budget.py's TICKET_WINDOW); the budget or more "
        "issues every ticket at create, as shrink did before lazy tickets",
    )
    parser.add_argument("--read-cost", help="comma-separated ticket counts: time one read (see read_cost)")
    parser.add_argument(
        "--judge-cost", help="comma-separated peer counts: time one rung decision (judge_cost)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--threads", "--first-index"):
        parser.add_argument(hidden, type=int, help=argparse.SUPPRESS)
    for hidden in ("--study", "--records", "--run-root"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return worker_process(args)

    if args.judge_cost:
        judge_cost([int(n) for n in args.judge_cost.split(",")])
        return 0
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workers = [int(w) for w in args.workers.split(",")]
    budgets = [int(t) for t in args.trials.split(",")]
    storages = args.storages.split(",")
    server = None
    pg_url = args.postgres or os.environ.get("SHRINK_TEST_POSTGRES_URL")
    if any(s in ("postgresql", "grpc") for s in storages) and not pg_url:
        server = PrivatePostgres(max_connections=4 * max(workers) + 50)
        pg_url = server.url
    if args.read_cost:
        try:
            read_cost(pg_url, [int(n) for n in args.read_cost.split(",")])
        finally:
            if server is not None:
                server.close()
        return 0
    print(f"{HEADER}\n(latencies in ms; overhead50: shrink's own seconds per trial, ms, without the sampler "
          f"and the stub's {args.epochs} x {args.epoch_s} s of sleep)")  # fmt: skip
    outcomes: list[Outcome] = []
    try:
        for storage in storages:
            proxy = None
            if storage == "grpc":
                proxy, url = grpc_proxy(pg_url)
                if proxy is None:
                    print(f"grpc: skipped ({url})")
                    continue
            elif storage == "sqlite":
                url = f"sqlite:///{tempfile.mkdtemp(prefix='shrink-load-sqlite-')}/study.db"
            else:
                url = pg_url
            try:
                for budget in budgets:
                    for count in workers:
                        database = pg_url if storage != "sqlite" else None
                        outcome = run_configuration(args, storage, url, database, count, budget)
                        outcomes.append(outcome)
                        for row in outcome.rows:
                            print(f"{storage:<11} {count:>7} {row}")
                        print(
                            f"{storage:<11} {count:>7}   done {outcome.finished}/{budget} tickets in "
                            f"{outcome.wall_s:.0f} s; duplicate tickets {outcome.dup}, left {outcome.left}, "
                            f"errors {outcome.errors}" + ("" if outcome.ok else "  <-- NOT OK"),
                            flush=True,
                        )
                        for problem in outcome.problems[:5]:
                            print(f"    {problem}")
            finally:
                if proxy is not None:
                    proxy.kill()
                    proxy.wait()
    finally:
        if server is not None:
            server.close()
    ok = all(o.ok for o in outcomes) and bool(outcomes)
    print("OK" if ok else "NOT OK")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
