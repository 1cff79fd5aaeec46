"""Many real workers on one study: nothing lost, nothing duplicated, trial numbers contiguous, and the cost.

Per storage it creates a study of tiny real trials and runs ``shrink launch --workers N`` on it: N real
``shrink worker`` processes (each imports torch and trains with the real trial runner and the CLI's dashboard
hooks) until the study's budget (``--trials``) is reached. The spec is minimal: ComCNN/RecCNN of depth 2-3 and
width 4-8 (sampled), 32 px crops, one step of one epoch, one dev image at one JPEG quality, 3 synthetic
176 px PNGs in a temporary folder (176 px: MS-SSIM needs sides > 160), 1 torch thread, no pruner, the random
sampler. Every worker runs with OMP_NUM_THREADS=MKL_NUM_THREADS=1.

Reliability, read back from the storage and the workers' logs afterwards:

- lost: planned trials that did not end COMPLETE (planned - COMPLETE, at least 0);
- duplicated: trial numbers stored twice, COMPLETE trials sharing an original trial (so a run folder), and
  trials that more than one worker reported as its own;
- contiguous: the stored trial numbers are exactly 0..n-1; left: trials still RUNNING or WAITING;
- over budget: COMPLETE trials beyond the plan, and trials that hold none of the budget's tickets (an error:
  the budget is exact, see shrink.search.budget);
- requeued: once half the plan is COMPLETE, the benchmark fails one RUNNING trial and re-queues it, as a
  heartbeat gone falsely stale would, while its worker still trains it: the retry races the original (the run
  folder's lock and the original's per-epoch ownership check must let exactly one of them finish it).

Cost. Wall time of the launch and trials/s (also from the first trial's start to the last one's end, without
the workers' start-up). A trial's own split: start->tell (Optuna's datetimes) against training (the sum of
its epochs' ``seconds``: training steps and dev evaluation, as the trainer measured them). The storage
overhead is *measured*, not inferred: every worker runs with a ``sitecustomize`` shim that times each call
into Optuna's storage classes (RDBStorage, its cache, JournalStorage; nested calls counted once) on the
worker's main thread, contention and lock waits included; the heartbeat thread's calls are counted apart.
Storage s/trial is that total over all workers divided by the COMPLETE trials, so it includes the workers'
attach and the budget checks between trials. "Worker time not training" is the workers' lifetimes minus
training, per trial: imports, attach, model set-up, sampling, dashboard hooks and storage -- what the
brief's "worker wall - trainer wall_s" measures, but at full resolution (``wall_s`` is rounded to 0.1 s).

On a 2-core machine 8 workers are CPU-bound (each import of torch takes ~2-3 s of CPU): the figures then
measure contention, not the storage alone. ``benchmarks/storage_overhead.py`` gives the single-process cost.

    .venv/bin/python benchmarks/concurrency.py [--workers 8] [--trials 200] [--journal-workers 4]
        [--storages sqlite,journal,postgresql] [--postgres URL] [--keep DIR]

PostgreSQL: ``--postgres URL``, else $SHRINK_TEST_POSTGRES_URL, else the URL .ci/postgres.sh (``make
postgres``) wrote to /tmp/shrink-ci-pg-<uid>/url; without a reachable server it prints a "skipped" line. Its
study gets a unique name and is deleted afterwards unless ``--keep``. Exit code 1 when any storage lost,
duplicated or left a trial, numbered them with gaps, or a launch failed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState
from PIL import Image

from shrink.search.budget import is_over_budget
from shrink.search.spec import load_spec
from shrink.search.storage import (
    Requeue,
    ShrinkStorage,
    StorageError,
    open_storage,
    redact,
    storage_of,
    trial_id_of,
)
from shrink.search.study import create

STORAGES = ("sqlite", "journal", "postgresql")
POSTGRES_ENV = "SHRINK_TEST_POSTGRES_URL"
TIMING_ENV = "SHRINK_BENCH_STORAGE_TIMING"
IMAGE_SIDE = 176
N_IMAGES = 3
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

SPEC = """\
name = "concurrency"
seed = 0

[base]
seed = 0
device = {{ device = "cpu", threads = 1 }}
model = {{ ratio = 2, comcnn = {{ depth = 2, width = 4 }}, reccnn = {{ depth = 2, width = 4 }} }}
codec = {{ threads = 1 }}
data = {{ dev_qualities = [50] }}

[base.training]
rec_warmup_epochs = 1

[data]
train = {images}
dev = {images}
dev_max_images = 1

[budget]
n_trials = {n_trials}
epochs = 1
steps_per_epoch = 1
crop = 32
batch_size = 1

[objective]
mode = "multi"

[pruner]
name = "none"

[sampler]
name = "random"

[space."model.comcnn.width"]
type = "categorical"
choices = [4, 8]

[space."model.reccnn.depth"]
type = "int"
low = 2
high = 3

[space."codec.quality"]
type = "int"
low = 30
high = 70
step = 10
"""

# sitecustomize for the workers (its folder on PYTHONPATH, $SHRINK_BENCH_STORAGE_TIMING set): wraps the
# storage classes' public methods and writes the totals to $SHRINK_BENCH_STORAGE_TIMING/<pid>.json at exit.
SHIM = """\
import os

if os.environ.get("SHRINK_BENCH_STORAGE_TIMING"):
    import atexit
    import functools
    import json
    import sys
    import threading
    import time

    from optuna.storages import BaseStorage, JournalStorage, RDBStorage
    from optuna.storages._cached_storage import _CachedStorage
    from optuna.storages._heartbeat import BaseHeartbeat

    _started = time.time()
    _local = threading.local()
    _totals = {"main_s": 0.0, "main_calls": 0, "thread_s": 0.0, "thread_calls": 0, "by_call": {}}

    def _timed(name, method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            depth = getattr(_local, "depth", 0)
            if depth:
                return method(*args, **kwargs)
            _local.depth = 1
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                seconds = time.perf_counter() - start
                _local.depth = 0
                if threading.current_thread() is threading.main_thread():
                    _totals["main_s"] += seconds
                    _totals["main_calls"] += 1
                    calls = _totals["by_call"].setdefault(name, [0, 0.0])
                    calls[0] += 1
                    calls[1] += seconds
                else:
                    _totals["thread_s"] += seconds
                    _totals["thread_calls"] += 1

        return wrapper

    _names = [n for n in (*dir(BaseStorage), *dir(BaseHeartbeat)) if not n.startswith("_")]
    for _cls in (RDBStorage, _CachedStorage, JournalStorage):
        for _name in _names:
            if callable(getattr(_cls, _name, None)):
                setattr(_cls, _name, _timed(_name, getattr(_cls, _name)))

    @atexit.register
    def _dump():
        record = dict(_totals, pid=os.getpid(), argv=sys.argv[1:], started=_started, ended=time.time())
        path = os.path.join(os.environ["SHRINK_BENCH_STORAGE_TIMING"], f"{os.getpid()}.json")
        with open(path, "w") as out:
            json.dump(record, out)
"""


# ---- set-up -----------------------------------------------------------------------------------------------
def write_images(folder: Path, seed: int = 0) -> Path:
    """Smooth random colour fields with mild noise: photo-like enough for JPEG and MS-SSIM."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(N_IMAGES):
        coarse = rng.uniform(0, 255, size=(IMAGE_SIDE // 16 + 2, IMAGE_SIDE // 16 + 2, 3)).astype(np.uint8)
        smooth = Image.fromarray(coarse).resize((IMAGE_SIDE, IMAGE_SIDE), Image.BICUBIC)
        noisy = np.asarray(smooth, dtype=np.float64) + rng.normal(0, 6, size=(IMAGE_SIDE, IMAGE_SIDE, 3))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"img{index}.png")
    return folder


def postgres_url(given: str | None) -> str | None:
    if given:
        return given
    if os.environ.get(POSTGRES_ENV):
        return os.environ[POSTGRES_ENV]
    folder = os.environ.get("SHRINK_PG_DIR") or Path(tempfile.gettempdir()) / f"shrink-ci-pg-{os.getuid()}"
    path = Path(folder) / "url"
    return path.read_text().strip() if path.is_file() else None


def dispose(storage) -> None:
    if isinstance(storage, ShrinkStorage):
        storage.dispose()


# ---- one run ----------------------------------------------------------------------------------------------
@dataclass
class Run:
    storage: str
    workers: int
    planned: int
    exit_code: int = 0
    wall_s: float = 0.0
    states: Counter = field(default_factory=Counter)
    numbers: list[int] = field(default_factory=list)
    duplicated: int = 0
    duplicate_notes: list[str] = field(default_factory=list)
    per_worker: list[int] = field(default_factory=list)
    first_start_s: float = float("nan")
    span_s: float = float("nan")
    trial_s: list[float] = field(default_factory=list)
    train_s: list[float] = field(default_factory=list)
    storage_s: float = 0.0
    storage_calls: int = 0
    heartbeat_s: float = 0.0
    lifetime_s: float = 0.0
    by_call: Counter = field(default_factory=Counter)
    timed_workers: int = 0
    without_ticket: int = 0
    requeued: int | None = None  # the trial number failed and re-queued mid-run
    retry_completed: bool = False

    @property
    def complete(self) -> int:
        return self.states["COMPLETE"]

    @property
    def lost(self) -> int:
        return max(0, self.planned - self.complete)

    @property
    def over(self) -> int:
        return max(0, self.complete - self.planned) + self.without_ticket

    @property
    def left(self) -> int:
        return self.states["RUNNING"] + self.states["WAITING"]

    @property
    def contiguous(self) -> bool:
        return sorted(self.numbers) == list(range(len(self.numbers)))

    @property
    def ok(self) -> bool:
        return (
            self.exit_code == 0
            and not self.lost
            and not self.duplicated
            and self.contiguous
            and not self.left
            and not self.over
            and (self.requeued is None or self.retry_completed)
        )

    def share(self, seconds: float) -> float:
        return 100 * seconds / self.lifetime_s if self.lifetime_s else float("nan")

    def per_trial(self, total: float) -> float:
        return total / self.complete if self.complete else float("nan")


CLAIM = re.compile(r"^\[w(\d+)\] trial (\d+) ([A-Z]+)\b")


def run_storage(
    kind: str, url: str, workers: int, args: argparse.Namespace, folder: Path, study_name: str
) -> Run:
    spec_path = folder / "spec.toml"
    images = json.dumps(str(write_images(folder / "images")))  # a TOML basic string
    spec_path.write_text(SPEC.format(images=images, n_trials=args.trials))
    handle = create(load_spec(spec_path), url, study_name)
    dispose(storage_of(handle.study))
    timing = folder / "timing"
    timing.mkdir()
    shim = folder / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SHIM)
    env = dict(os.environ, **SINGLE_THREAD, SHRINK_STORAGE=url, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH")) if p)
    env[TIMING_ENV] = str(timing)
    command = [sys.executable, "-P", "-m", "shrink.search.cli", "launch", "--workers", str(workers)]
    command += ["--study-name", study_name, "--run-root", str(folder / "runs")]
    log_path = folder / "launch.log"
    run = Run(kind, workers, args.trials)
    launched = datetime.datetime.now()
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            if args.requeue:
                run.requeued = requeue_one_mid_run(process, url, study_name, args.trials)
            run.exit_code = process.wait(timeout=args.launch_timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)  # launch forwards it: workers checkpoint and re-queue
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            run.exit_code = 124
    run.wall_s = time.perf_counter() - start
    read_study(run, url, study_name, launched)
    read_logs(run, log_path.read_text().splitlines())
    read_timing(run, timing)
    return run


def requeue_one_mid_run(process: subprocess.Popen, url: str, study_name: str, planned: int) -> int | None:
    """Once half the plan is COMPLETE, fail a RUNNING trial and re-queue it (what a heartbeat that went
    falsely stale does) while its worker still trains it; returns its number (None if the launch ended)."""
    storage = open_storage(url, heartbeat_interval=None)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
        while process.poll() is None:
            trials = study.get_trials(deepcopy=False)
            running = [t for t in trials if t.state == TrialState.RUNNING]
            if running and sum(t.state == TrialState.COMPLETE for t in trials) >= planned // 2:
                victim = running[-1]
                try:
                    failed = storage.set_trial_state_values(trial_id_of(victim), TrialState.FAIL)
                except UpdateFinishedTrialError:  # it finished between the read and the write: pick again
                    failed = False
                if failed:
                    Requeue()(study, storage.get_trial(trial_id_of(victim)))
                    return victim.number
            time.sleep(0.05)
        return None
    finally:
        dispose(storage)


def read_study(run: Run, url: str, study_name: str, launched: datetime.datetime) -> None:
    storage = open_storage(url, heartbeat_interval=None)
    try:
        trials = optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
    finally:
        dispose(storage)
    run.states = Counter(t.state.name for t in trials)
    run.numbers = [t.number for t in trials]
    run.without_ticket = sum(1 for t in trials if is_over_budget(t))
    repeated = len(run.numbers) - len(set(run.numbers))
    if repeated:
        run.duplicated += repeated
        run.duplicate_notes.append(f"{repeated} trial numbers stored twice")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    originals = Counter(t.user_attrs.get("original_trial", t.number) for t in complete)
    run.retry_completed = run.requeued is not None and originals[run.requeued] == 1
    twice = {n: c for n, c in originals.items() if c > 1}
    if twice:
        run.duplicated += sum(c - 1 for c in twice.values())
        run.duplicate_notes.append(f"original trials completed more than once: {twice}")
    runs = Counter((json.dumps(t.params, sort_keys=True), t.user_attrs.get("run_dir")) for t in complete)
    if any(c > 1 for c in runs.values()) and not twice:
        run.duplicated += sum(c - 1 for c in runs.values())
        run.duplicate_notes.append("COMPLETE trials with the same params and run folder")
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    if starts and ends:
        run.first_start_s = (min(starts) - launched).total_seconds()
        run.span_s = (max(ends) - min(starts)).total_seconds()
    for trial in complete:
        if trial.datetime_start and trial.datetime_complete:
            run.trial_s.append((trial.datetime_complete - trial.datetime_start).total_seconds())
        run.train_s.append(sum(epoch["seconds"] for epoch in trial.user_attrs.get("epochs", [])))


def read_logs(run: Run, lines: list[str]) -> None:
    """Which worker reported which trial (``[wK] trial N STATE: ...``, the worker's line per trial)."""
    claims: dict[int, set[int]] = {}
    per_worker: Counter = Counter()
    for line in lines:
        match = CLAIM.match(line)
        if match:
            worker, number = int(match.group(1)), int(match.group(2))
            claims.setdefault(number, set()).add(worker)
            per_worker[worker] += 1
    shared = {n: sorted(w) for n, w in claims.items() if len(w) > 1}
    if shared:
        run.duplicated += sum(len(w) - 1 for w in shared.values())
        run.duplicate_notes.append(f"trials reported by several workers: {shared}")
    run.per_worker = [per_worker[w] for w in range(run.workers)]


def read_timing(run: Run, folder: Path) -> None:
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        if not record["argv"] or record["argv"][0] != "worker":
            continue  # the launcher
        run.timed_workers += 1
        run.storage_s += record["main_s"]
        run.storage_calls += record["main_calls"]
        run.heartbeat_s += record["thread_s"]
        run.lifetime_s += record["ended"] - record["started"]
        for name, (_, seconds) in record["by_call"].items():
            run.by_call[name] += seconds


# ---- report -----------------------------------------------------------------------------------------------
def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def requeue_note(run: Run) -> str:
    if run.requeued is None:
        return "none"
    return f"trial {run.requeued} mid-run; its retry completed it: {'yes' if run.retry_completed else 'NO'}"


def report(run: Run, url: str) -> None:
    states = ", ".join(f"{count} {state}" for state, count in sorted(run.states.items()))
    numbers = sorted(run.numbers)
    span = f"{numbers[0]}..{numbers[-1]}" if numbers else "none"
    train = sum(run.train_s)
    not_training = run.per_trial(run.lifetime_s - train)
    top = ", ".join(
        f"{name} {100 * seconds / run.storage_s:.0f} %"
        for name, seconds in run.by_call.most_common(4)
        if run.storage_s > 0
    )
    rows = [
        ("storage", f"{redact(url)}"),
        ("trials", f"{run.planned} planned; stored: {states or 'none'}"),
        ("lost", f"{run.lost}"),
        ("duplicated", f"{run.duplicated} {'; '.join(run.duplicate_notes)}".rstrip()),
        ("contiguous", f"{'yes' if run.contiguous else 'no'} ({len(numbers)} numbers, {span})"),
        ("left", f"{run.left} RUNNING/WAITING"),
        ("over budget", f"{run.over} (COMPLETE beyond the plan, or trials holding no ticket)"),
        ("requeued", requeue_note(run)),
        ("launch exit", f"{run.exit_code}"),
        ("per worker", ", ".join(str(n) for n in run.per_worker) + " trials reported"),
        (
            "wall",
            f"{run.wall_s:.1f} s = {rate(run.complete, run.wall_s):.3g} trials/s; first trial started after "
            f"{run.first_start_s:.1f} s; first start -> last end {run.span_s:.1f} s = "
            f"{rate(run.complete, run.span_s):.3g} trials/s",
        ),
        ("trial", f"{mean(run.trial_s):.3f} s start->tell, of which training {mean(run.train_s):.3f} s"),
        (
            "storage",
            f"{run.per_trial(run.storage_s):.4f} s/trial in storage calls ({run.storage_calls} calls, "
            f"{run.share(run.storage_s):.1f} % of worker time; "
            f"{run.timed_workers} workers timed); heartbeat threads {run.heartbeat_s:.3f} s",
        ),
        ("storage calls", top or "none timed"),
        ("not training", f"{not_training:.3f} s/trial of worker time (imports, attach, set-up, hooks, ...)"),
    ]
    print(f"== {run.storage}: {run.workers} workers x {run.planned} trials ==")
    for name, value in rows:
        print(f"  {name:<14}{value}")
    print(flush=True)


SUMMARY = (
    f"{'storage':<11}{'workers':>8}{'trials':>7}{'complete':>9}{'lost':>6}{'dup':>5}{'contiguous':>11}"
    f"{'left':>6}{'over':>5}{'requeued':>9}{'wall_s':>9}{'trials/s':>9}{'storage_s/trial':>16}"
    f"{'not_training_s/trial':>21}"
)


def summary_row(run: Run) -> str:
    not_training = run.per_trial(run.lifetime_s - sum(run.train_s))
    requeued = "-" if run.requeued is None else ("done" if run.retry_completed else "LOST")
    return (
        f"{run.storage:<11}{run.workers:>8}{run.planned:>7}{run.complete:>9}{run.lost:>6}{run.duplicated:>5}"
        f"{'yes' if run.contiguous else 'no':>11}{run.left:>6}{run.over:>5}{requeued:>9}{run.wall_s:>9.1f}"
        f"{rate(run.complete, run.wall_s):>9.3g}{run.per_trial(run.storage_s):>16.4f}{not_training:>21.3f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8, help="workers on SQLite and PostgreSQL")
    parser.add_argument("--trials", type=int, default=200, help="the study's budget (n_trials)")
    parser.add_argument("--journal-workers", type=int, default=4, help="workers on the journal file")
    parser.add_argument("--storages", default=",".join(STORAGES), help=f"comma-separated: {STORAGES}")
    parser.add_argument("--postgres", metavar="URL", help=f"default: ${POSTGRES_ENV}, .ci/postgres.sh's URL")
    parser.add_argument("--keep", metavar="DIR", help="keep each storage's folder (study, logs, runs) in DIR")
    parser.add_argument("--launch-timeout", type=float, default=3600, help="stop a launch after this (s)")
    parser.add_argument(
        "--no-requeue", dest="requeue", action="store_false", help="do not re-queue a running trial mid-run"
    )
    args = parser.parse_args()
    kinds = [kind.strip() for kind in args.storages.split(",") if kind.strip()]
    unknown = sorted(set(kinds) - set(STORAGES))
    if unknown:
        parser.error(f"unknown storages {unknown}: use {', '.join(STORAGES)}")
    if min(args.workers, args.trials, args.journal_workers) < 1:
        parser.error("--workers, --trials and --journal-workers must be >= 1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(
        f"{args.trials} tiny real trials per storage, via `shrink launch`; {os.cpu_count()} CPUs here, "
        f"1 thread per worker\n",
        flush=True,
    )
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="shrink-concurrency-") as tmp:
        root = Path(args.keep or tmp).resolve()
        root.mkdir(parents=True, exist_ok=True)
        for kind in kinds:
            folder = root / kind
            if folder.exists():
                parser.error(f"{folder} already exists; give --keep an empty folder")
            folder.mkdir()
            workers = args.journal_workers if kind == "journal" else args.workers
            study_name = "concurrency"
            if kind == "sqlite":
                url = f"sqlite:///{folder / 'study.db'}"
            elif kind == "journal":
                url = f"journal:{folder / 'study.log'}"
            else:
                url = postgres_url(args.postgres)
                if not url:
                    print(
                        f"== postgresql: skipped (no server: --postgres, ${POSTGRES_ENV} and the URL file "
                        "of .ci/postgres.sh are all unset) ==\n"
                    )
                    continue
                try:
                    dispose(open_storage(url, heartbeat_interval=None))
                except StorageError as error:
                    print(f"== postgresql: skipped ({error}) ==\n")
                    continue
                study_name = f"concurrency-{uuid.uuid4().hex[:8]}"
            run = run_storage(kind, url, workers, args, folder, study_name)
            runs.append(run)
            report(run, url)
            if kind == "postgresql":
                if args.keep:
                    print(f"postgresql study {study_name!r} kept in {redact(url)}\n")
                else:
                    storage = open_storage(url, heartbeat_interval=None)
                    optuna.delete_study(study_name=study_name, storage=storage)
                    dispose(storage)
    print(SUMMARY)
    for run in runs:
        print(summary_row(run))
    failed = [run.storage for run in runs if not run.ok]
    verdict = f"FAILED: {', '.join(failed)}" if failed else "OK"
    print(f"\n{verdict}: lost, duplicated, left, over budget, gaps and the re-queued retry, per storage")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
